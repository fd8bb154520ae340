"""Failures on the way: retries before the first byte, broken streams, timeouts, disconnects, drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from prometheus_client import REGISTRY

from strata_contracts.messages import RouteDecision, RoutePick
from strata_testing import free_port, poll_until

Start = Callable[..., Awaitable[Any]]
MakeFake = Callable[..., Awaitable[Any]]
Register = Callable[..., Awaitable[str]]
PROMPT = [{"role": "user", "content": "hello"}]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _first_allowed(order: list[str]) -> Callable[[RoutePick], RouteDecision]:
    """A router that prefers the engines in `order`, honouring the pick's exclusions."""

    def choose(pick: RoutePick) -> RouteDecision:
        engine = next(e for e in order if e not in pick.exclude)
        return RouteDecision(decision_id=f"d-{pick.request_id}", engine_id=engine, strategy="test-router")

    return choose


async def _sse(url: str, body: dict[str, Any], timeout: float = 10.0) -> tuple[int, list[bytes]]:
    """POST a streaming request; the raw SSE events (without their blank line)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.post(url, json={**body, "stream": True}) as response,
    ):
        raw = await response.read()
    return response.status, [event for event in raw.split(b"\n\n") if event]


@pytest.mark.parametrize("failure", ["refused", "status_500"])
async def test_failure_before_the_first_byte_is_retried_on_another_engine(
    failure: str, start_gateway: Start, fake_engine: MakeFake, fake_router: Any, register: Register, model: str
) -> None:
    bad_url = f"http://127.0.0.1:{free_port()}" if failure == "refused" else (await fake_engine(model, failure)).url
    good = await fake_engine(model)
    bad_id, good_id = await register(bad_url, model), await register(good.url, model)
    await fake_router(_first_allowed([bad_id, good_id]))
    gateway = await start_gateway()
    kind = "connect" if failure == "refused" else "status_5xx"
    retries_before = _metric("strata_gateway_retries_total", reason=kind)
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        raw = await api.chat.completions.with_raw_response.create(model=model, messages=PROMPT)
    assert raw.headers["x-strata-engine"] == good_id
    assert _metric("strata_gateway_retries_total", reason=kind) == retries_before + 1
    (record,) = await gateway.sink.settled(1)
    assert (record.status, record.engine_id, record.completion_tokens) == (200, good_id, 3)


async def test_a_refusing_engine_is_avoided_without_a_router(
    start_gateway: Start, fake_engine: MakeFake, register: Register, model: str
) -> None:
    good = await fake_engine(model)
    await register(f"http://127.0.0.1:{free_port()}", model)
    good_id = await register(good.url, model)
    gateway = await start_gateway(router_enabled=False)
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        for _ in range(10):
            raw = await api.chat.completions.with_raw_response.create(model=model, messages=PROMPT)
            assert raw.headers["x-strata-engine"] == good_id
    assert len(await gateway.sink.settled(10)) == 10  # one record per request, retried or not
    assert len(good.bodies) == 10


async def test_retries_are_bounded_and_the_client_gets_502(
    start_gateway: Start, fake_engine: MakeFake, register: Register, model: str
) -> None:
    engines = [await fake_engine(model, "status_500") for _ in range(3)]
    for engine in engines:
        await register(engine.url, model)
    gateway = await start_gateway(max_retries=1, router_enabled=False)
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        with pytest.raises(openai.APIStatusError) as caught:
            await api.chat.completions.create(model=model, messages=PROMPT)
    assert caught.value.status_code == 502
    assert sum(len(e.bodies) for e in engines) == 2  # the first try and one retry
    (record,) = await gateway.sink.settled(1)
    assert (record.status, record.error) == (502, "upstream_error")


async def test_a_stream_broken_mid_way_ends_with_an_error_event_and_done(
    start_gateway: Start, fake_engine: MakeFake, register: Register, model: str
) -> None:
    engine = await fake_engine(model, "drop_after_2")
    await register(engine.url, model)
    gateway = await start_gateway()
    started = time.monotonic()
    status, events = await _sse(f"{gateway.v1}/chat/completions", {"model": model, "messages": PROMPT})
    assert time.monotonic() - started < 5  # never a hung connection
    assert status == 200
    assert len(events) == 4
    assert [orjson.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:2]] == ["a", "b"]
    error = orjson.loads(events[2][6:])["error"]
    assert (error["code"], error["type"]) == (502, "api_error")
    assert events[3] == b"data: [DONE]"
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        stream = await api.chat.completions.create(model=model, messages=PROMPT, stream=True)
        with pytest.raises(openai.APIError, match="failed"):
            _ = [chunk async for chunk in stream]
    assert [(r.status, r.error) for r in await gateway.sink.settled(2)] == [(200, "upstream_error")] * 2


async def test_an_engine_dropping_the_connection_after_done_costs_the_client_nothing(
    start_gateway: Start, fake_engine: MakeFake, register: Register, model: str
) -> None:
    engine = await fake_engine(model, "drop_after_done")
    await register(engine.url, model)
    gateway = await start_gateway()
    status, events = await _sse(f"{gateway.v1}/chat/completions", {"model": model, "messages": PROMPT})
    assert status == 200
    assert len(events) == 4  # three chunks and [DONE], no error event after it
    assert events[3] == b"data: [DONE]"
    (record,) = await gateway.sink.settled(1)
    assert (record.status, record.error, record.completion_tokens) == (200, None, 3)


async def test_an_engine_that_never_answers_is_a_504(
    start_gateway: Start, fake_engine: MakeFake, register: Register, model: str
) -> None:
    engine = await fake_engine(model, "hang")
    await register(engine.url, model)
    gateway = await start_gateway(idle_timeout_s=0.3)
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        with pytest.raises(openai.APIStatusError) as caught:
            await api.chat.completions.create(model=model, messages=PROMPT)
    assert caught.value.status_code == 504
    assert len(engine.bodies) == 1  # a timeout is not retried
    (record,) = await gateway.sink.settled(1)
    assert (record.status, record.error) == (504, "upstream_timeout")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_goes_away_cancels_the_engine_request(
    stream: bool, start_gateway: Start, fake_engine: MakeFake, register: Register, model: str
) -> None:
    engine = await fake_engine(model, "hang")
    await register(engine.url, model)
    gateway = await start_gateway()
    timeout = aiohttp.ClientTimeout(total=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        body = {"model": model, "messages": PROMPT, "stream": stream}
        with pytest.raises(TimeoutError):
            await session.post(f"{gateway.v1}/chat/completions", json=body)

    async def cancelled() -> bool:
        return engine.cancelled == 1 and len(gateway.sink.records) == 1

    await poll_until(cancelled, timeout=5, what="engine request cancelled and usage recorded")
    (record,) = await gateway.sink.settled(1)
    assert (record.status, record.error) == (499, "client_disconnected")


async def test_shutdown_drains_a_stream_in_progress(
    start_gateway: Start, fake_engine: MakeFake, register: Register, model: str
) -> None:
    engine = await fake_engine(model, "slow")
    await register(engine.url, model)
    gateway = await start_gateway()
    reading = asyncio.create_task(_sse(f"{gateway.v1}/chat/completions", {"model": model, "messages": PROMPT}))
    await poll_until(lambda: _true(len(engine.bodies) == 1), what="the stream started")
    gateway.shutdown.request_stop("test")
    status, events = await reading
    assert status == 200
    assert events[-1] == b"data: [DONE]"
    assert len(events) == 4  # three chunks and [DONE]: nothing cut off
    await asyncio.wait_for(gateway.task, 10)
    assert len(await gateway.sink.settled(1)) == 1


async def _true(value: bool) -> bool:
    return value


class _BrokenAdmission:
    def __init__(self) -> None:
        self.settled: list[tuple[int, int]] = []

    def settle(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.settled.append((prompt_tokens, completion_tokens))
        raise RuntimeError("limiter bug in settle")

    def release(self) -> None:
        raise RuntimeError("limiter bug in release")


class _BrokenLimiter:
    def __init__(self) -> None:
        self.admissions: list[_BrokenAdmission] = []

    async def admit(self, principal: Any) -> _BrokenAdmission:
        del principal
        self.admissions.append(_BrokenAdmission())
        return self.admissions[-1]


async def test_a_failing_limiter_costs_neither_the_response_nor_the_usage_record(
    start_gateway: Start, fake_engine: MakeFake, register: Register, model: str
) -> None:
    engine = await fake_engine(model)
    await register(engine.url, model)
    limiter = _BrokenLimiter()
    gateway = await start_gateway(limiter=limiter)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.v1}/chat/completions", json={"model": model, "messages": PROMPT}) as response,
    ):
        assert response.status == 200
        request_id = response.headers["x-request-id"]
        assert (await response.json())["choices"][0]["message"]["content"] == "abc"
    records = await gateway.sink.settled(1)
    assert [r.request_id for r in records] == [request_id]
    assert limiter.admissions[0].settled == [(7, 3)]  # settle was still called with the engine's usage
