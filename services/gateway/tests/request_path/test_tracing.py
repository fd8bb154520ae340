"""Tracing through the gateway: one server span per request, route and upstream children,
trace context carried to the engine and onto NATS (usage record, route outcome).

With tracing off (no SDK provider) the gateway records nothing and hands the client's
`traceparent` on to the engine unchanged, so a trace begun upstream still continues.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from nats.aio.msg import Msg
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from strata_contracts import subjects
from strata_runtime import Broker

from .conftest import FakeEngine, Gateway

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


async def _chat(gateway: Gateway, model: str, *, stream: bool) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.v1}/chat/completions",
            json={**BODY, "model": model, "stream": stream},
            headers={"traceparent": PARENT},
        ) as response,
    ):
        assert response.status == 200
        await response.read()


async def _gateway_with(
    start_gateway: Callable[..., Awaitable[Gateway]],
    fake_engine: Callable[..., Awaitable[FakeEngine]],
    register: Callable[..., Awaitable[str]],
    model: str,
    **settings: Any,
) -> tuple[Gateway, FakeEngine]:
    engine = await fake_engine(model)
    await register(engine.url, model)
    return await start_gateway(**settings), engine


@pytest.mark.parametrize("stream", [False, True])
async def test_server_span_with_route_and_upstream_children_and_context_to_the_engine(
    spans: InMemorySpanExporter,
    start_gateway: Callable[..., Awaitable[Gateway]],
    fake_engine: Callable[..., Awaitable[FakeEngine]],
    register: Callable[..., Awaitable[str]],
    model: str,
    stream: bool,
) -> None:
    gateway, engine = await _gateway_with(start_gateway, fake_engine, register, model)
    await _chat(gateway, model, stream=stream)
    await gateway.sink.settled(1)

    finished = [s for s in spans.get_finished_spans() if s.context.trace_id == int(TRACE_ID, 16)]
    by_name = {s.name: s for s in finished}
    server = by_name["POST /v1/chat/completions"]
    assert server.kind == SpanKind.SERVER
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == "b7ad6b7169203331"
    route, upstream = by_name["gateway.route"], by_name["gateway.upstream"]
    assert route.parent is not None
    assert route.parent.span_id == server.context.span_id
    assert upstream.parent is not None
    assert upstream.parent.span_id == server.context.span_id
    assert upstream.kind == SpanKind.CLIENT
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    sent = engine.headers[-1]["traceparent"]
    assert sent == f"00-{TRACE_ID}-{upstream.context.span_id:016x}-01"


async def test_usage_record_and_route_outcome_carry_the_request_trace(
    spans: InMemorySpanExporter,
    start_gateway: Callable[..., Awaitable[Gateway]],
    fake_engine: Callable[..., Awaitable[FakeEngine]],
    register: Callable[..., Awaitable[str]],
    broker: Broker,
    model: str,
) -> None:
    del spans  # installs the recording provider
    seen: dict[str, Msg] = {}
    got_both = asyncio.Event()

    async def keep(msg: Msg) -> None:
        seen[msg.subject.split(".")[1]] = msg  # "usage" / "route"
        if len(seen) == 2:
            got_both.set()

    usage_sub = await broker.client.subscribe(subjects.usage("default"), cb=keep)
    outcome_sub = await broker.client.subscribe(subjects.ROUTE_OUTCOME, cb=keep)
    try:
        gateway, _ = await _gateway_with(
            start_gateway, fake_engine, register, model, real_ports=True, auth_enabled=False
        )
        await _chat(gateway, model, stream=False)
        await asyncio.wait_for(got_both.wait(), 10)
    finally:
        await usage_sub.unsubscribe()
        await outcome_sub.unsubscribe()
    for msg in seen.values():
        assert msg.headers is not None
        assert TRACE_ID in msg.headers["traceparent"]


async def test_tracing_off_passes_the_client_trace_context_through(
    start_gateway: Callable[..., Awaitable[Gateway]],
    fake_engine: Callable[..., Awaitable[FakeEngine]],
    register: Callable[..., Awaitable[str]],
    model: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("strata_gateway.handlers.proxy.tracing_active", lambda: False)
    gateway, engine = await _gateway_with(start_gateway, fake_engine, register, model)
    await _chat(gateway, model, stream=True)
    assert engine.headers[-1]["traceparent"] == PARENT
