"""The router seam: fallback picks, the router's choice, outcomes, trace context."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from prometheus_client import REGISTRY

from strata_contracts import subjects
from strata_contracts.messages import RouteDecision, RouteOutcome, RoutePick, decode, encode
from strata_runtime import Broker
from strata_testing import poll_until

Start = Callable[..., Awaitable[Any]]
MakeFake = Callable[..., Awaitable[Any]]
Register = Callable[..., Awaitable[str]]
PROMPT = [{"role": "user", "content": "route me"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _fallbacks(reason: str) -> float:
    return REGISTRY.get_sample_value("strata_gateway_route_fallback_total", {"reason": reason}) or 0.0


async def _two_engines(fake_engine: MakeFake, register: Register, model: str) -> list[tuple[str, Any]]:
    engines = [await fake_engine(model), await fake_engine(model)]
    return [(await register(e.url, model), e) for e in engines]


async def test_without_a_router_the_gateway_picks_locally_and_counts_it(
    start_gateway: Start, fake_engine: MakeFake, register: Register, broker: Broker, model: str
) -> None:
    await _two_engines(fake_engine, register, model)
    outcomes: list[RouteOutcome] = []

    async def collect(msg: Any) -> None:
        outcomes.append(decode(RouteOutcome, msg.data))

    subscription = await broker.client.subscribe(subjects.ROUTE_OUTCOME, cb=collect)
    gateway = await start_gateway()
    before = _fallbacks("no_responders")
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        for strategy, local in [("prefix-cache", "least-request"), ("random", "random")]:
            raw = await api.chat.completions.with_raw_response.create(
                model=model, messages=PROMPT, extra_headers={"routing-strategy": strategy}
            )
            assert raw.headers["x-strata-route-fallback"] == "no_responders"
            assert raw.headers["x-strata-strategy"] == local
    assert _fallbacks("no_responders") == before + 2
    assert [r.strategy for r in await gateway.sink.settled(2)] == ["least-request", "random"]
    await poll_until(lambda: _ready(len(outcomes) == 2), what="outcomes of local picks (no decision id)")
    await subscription.unsubscribe()
    assert [o.decision_id for o in outcomes] == [None, None]


async def test_the_routers_choice_is_used_and_its_outcome_published(
    start_gateway: Start, fake_engine: MakeFake, fake_router: Any, register: Register, broker: Broker, model: str
) -> None:
    engines = await _two_engines(fake_engine, register, model)
    chosen_id, chosen = engines[1]
    router = await fake_router(
        lambda pick: RouteDecision(decision_id="dec-1", engine_id=chosen_id, strategy=pick.strategy or "x")
    )
    outcomes: list[RouteOutcome] = []

    async def collect(msg: Any) -> None:
        outcomes.append(decode(RouteOutcome, msg.data))

    subscription = await broker.client.subscribe(subjects.ROUTE_OUTCOME, cb=collect)
    gateway = await start_gateway()
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        for _ in range(3):
            raw = await api.chat.completions.with_raw_response.create(
                model=model, messages=PROMPT, extra_headers={"routing-strategy": "prefix-cache", "x-session-id": "s1"}
            )
            assert raw.headers["x-strata-engine"] == chosen_id
            assert raw.headers["x-strata-strategy"] == "prefix-cache"
            assert "x-strata-route-fallback" not in raw.headers
    assert len(chosen.bodies) == 3
    pick: RoutePick = router.picks[0]
    assert (pick.model, pick.strategy, pick.tenant_id, pick.session_id) == (model, "prefix-cache", "default", "s1")
    assert pick.prompt_text == "route me"
    assert pick.deadline_ms == 20
    await poll_until(lambda: _ready(len(outcomes) == 3), what="three route outcomes")
    await subscription.unsubscribe()
    assert {(o.decision_id, o.engine_id, o.status, o.completion_tokens) for o in outcomes} == {
        ("dec-1", chosen_id, 200, 3)
    }


async def test_a_slow_router_is_not_waited_for(
    start_gateway: Start, fake_engine: MakeFake, fake_router: Any, register: Register, model: str
) -> None:
    engines = await _two_engines(fake_engine, register, model)
    await fake_router(
        lambda pick: RouteDecision(decision_id="late", engine_id=engines[0][0], strategy="x"), delay_s=0.2
    )
    gateway = await start_gateway(route_timeout_ms=20)
    before = _fallbacks("timeout")
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        raw = await api.chat.completions.with_raw_response.create(model=model, messages=PROMPT)
    assert raw.headers["x-strata-route-fallback"] == "timeout"
    assert _fallbacks("timeout") == before + 1


async def _expect_503(gateway: Any, model: str, text: str) -> None:
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        with pytest.raises(openai.APIStatusError) as caught:
            await api.chat.completions.create(model=model, messages=PROMPT)
    assert caught.value.status_code == 503
    assert text in caught.value.message
    (record,) = await gateway.sink.settled(1)
    assert (record.status, record.engine_id) == (503, None)


async def test_a_router_that_finds_no_engine_is_a_503(
    start_gateway: Start, fake_engine: MakeFake, register: Register, broker: Broker, model: str
) -> None:
    await _two_engines(fake_engine, register, model)
    decision = RouteDecision(decision_id="d", engine_id=None, strategy="x", error="all busy")

    async def reply(msg: Any) -> None:
        await msg.respond(encode(decision))

    subscription = await broker.client.subscribe(subjects.ROUTE_PICK, queue=subjects.ROUTER_QUEUE_GROUP, cb=reply)
    try:
        await _expect_503(await start_gateway(), model, "all busy")
    finally:
        await subscription.unsubscribe()


async def test_a_no_engine_decision_survives_the_standard_codec(
    start_gateway: Start, fake_engine: MakeFake, fake_router: Any, register: Register, model: str
) -> None:
    await _two_engines(fake_engine, register, model)
    await fake_router(lambda pick: RouteDecision(decision_id="d", engine_id=None, strategy="x", error="all busy"))
    await _expect_503(await start_gateway(), model, "all busy")


async def test_trace_context_and_request_id_reach_the_engine(
    start_gateway: Start, fake_engine: MakeFake, register: Register, model: str
) -> None:
    engine = await fake_engine(model)
    await register(engine.url, model)
    gateway = await start_gateway()
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        await api.chat.completions.create(
            model=model,
            messages=PROMPT,
            extra_headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "x-request-id": "trace-me"},
        )
    headers = {k.lower(): v for k, v in engine.headers[0].items()}
    assert headers["traceparent"].split("-")[1] == TRACE_ID
    assert headers["x-request-id"].startswith("req-")  # the gateway's own id: unique even when clients reuse theirs
    assert "authorization" not in headers  # the client's key never reaches an engine


async def test_engines_registered_later_are_routed_to(
    start_gateway: Start, fake_engine: MakeFake, register: Register, model: str
) -> None:
    gateway = await start_gateway()
    engine = await fake_engine(model)
    await register(engine.url, model)
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:

        async def listed() -> bool:
            return any(m.id == model for m in (await api.models.list()).data)

        await poll_until(listed, what="the new engine's model is listed")
        await api.chat.completions.create(model=model, messages=PROMPT)
    assert len(engine.bodies) == 1


async def _ready(value: bool) -> bool:
    await asyncio.sleep(0)
    return value
