"""Fixtures of the request-path tests: engines, registrations, a gateway in this process.

* `sim_engine(model)`: a simulated vLLM (strata_enginesim) on a free port; yields its URL.
* `fake_engine(model, mode)`: a programmable vLLM-like engine (see :class:`FakeEngine`).
* `register(engine_id, url, model)`: puts a fresh EngineRegistration in the registry bucket.
* `start_gateway(**settings)`: runs build_app in this process with auth off and a
  recording usage sink (or, with `real_ports=True`, the app's own PostgreSQL / NATS
  ports); stopped gracefully at teardown.

Every test uses its own model name, so registrations of other tests never interfere.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from strata_contracts import subjects
from strata_contracts.messages import (
    EngineRegistration,
    HashScheme,
    RouteDecision,
    RoutePick,
    UsageRecord,
    decode,
    encode,
)
from strata_enginesim.app import run_single_engine
from strata_enginesim.domain.latency import load_profile
from strata_gateway.app import build_app
from strata_gateway.domain.local import NoLimits, OpenAuthenticator
from strata_gateway.domain.ports import Limiter, UsageEntry
from strata_gateway.handlers.proxy import Ports
from strata_gateway.settings import GatewaySettings
from strata_runtime import Broker, GracefulShutdown, run_service
from strata_testing import free_port, poll_until


class RecordingSink:
    """A UsageSink that keeps every record (the tests count them)."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    async def record_many(self, entries: Sequence[UsageEntry]) -> None:
        self.records.extend(decode(UsageRecord, entry.payload) for entry in entries)  # the wire form must validate

    def of(self, request_id: str) -> list[UsageRecord]:
        return [r for r in self.records if r.request_id == request_id]

    async def settled(self, count: int) -> list[UsageRecord]:
        """The records once `count` have arrived (accounting runs after the response), plus a beat for extras."""

        async def enough() -> bool:
            return len(self.records) >= count

        await poll_until(enough, timeout=5, what=f"{count} usage records")
        await asyncio.sleep(0.05)  # a duplicate record would show up by now
        return list(self.records)


@dataclass
class Gateway:
    url: str
    sink: RecordingSink
    shutdown: GracefulShutdown
    task: asyncio.Task[None]

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"


@dataclass
class FakeEngine:
    """A vLLM-like engine whose behaviour a test chooses.

    Modes: `ok` (JSON or SSE with usage), `status_500`, `status_400` (vLLM envelope),
    `drop_after_2` (two chunks, then the connection is cut), `drop_after_done` (the whole
    stream, then the connection is cut before the response's end), `hang` (never answers),
    `slow` (a chunk every 0.2 s).
    Every request is recorded (body, headers); `cancelled` counts requests whose client
    (the gateway) went away while the engine was still working.
    """

    model: str
    mode: str = "ok"
    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    cancelled: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_post("/v1/completions", self._generate)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        try:
            return await self._respond(request, body)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def _respond(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "status_500":
            return web.json_response(
                {"error": {"message": "boom", "type": "InternalServerError", "code": 500}}, status=500
            )
        if self.mode == "status_400":
            error = {
                "message": "max_tokens is too large",
                "type": "BadRequestError",
                "param": "max_tokens",
                "code": 400,
            }
            return web.json_response({"error": error}, status=400)
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "total_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "abc"}, "finish_reason": "stop"}
            return web.json_response({"id": "chatcmpl-1", "object": "chat.completion", "model": self.model,
                                      "choices": [choice], "usage": usage})  # fmt: skip
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        for i, text in enumerate(["a", "b", "c"]):
            if self.mode == "drop_after_2" and i == 2:
                assert request.transport is not None
                request.transport.abort()
                await asyncio.sleep(3600)
            if self.mode == "slow":
                await asyncio.sleep(0.2)
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": self.model,
                     "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}  # fmt: skip
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            final = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "model": self.model,
                "choices": [],
                "usage": usage,
            }
            await response.write(b"data: " + orjson.dumps(final) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        if self.mode == "drop_after_done":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(3600)
        await response.write_eof()
        return response


@dataclass
class FakeRouter:
    """Answers strata.route.v1.pick with `choose(pick)` after `delay_s`; records every pick."""

    choose: Callable[[RoutePick], RouteDecision]
    delay_s: float = 0.0
    picks: list[RoutePick] = field(default_factory=list)

    async def handle(self, pick: RoutePick, _msg: Any) -> RouteDecision:
        self.picks.append(pick)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self.choose(pick)


@pytest_asyncio.fixture
async def fake_router(broker: Broker) -> AsyncIterator[Callable[..., Awaitable[FakeRouter]]]:
    subscriptions: list[Any] = []

    async def start(choose: Callable[[RoutePick], RouteDecision], delay_s: float = 0.0) -> FakeRouter:
        router = FakeRouter(choose, delay_s)
        subscriptions.append(
            await broker.subscribe(subjects.ROUTE_PICK, RoutePick, router.handle, queue=subjects.ROUTER_QUEUE_GROUP)
        )
        await broker.client.flush()
        return router

    yield start
    for subscription in subscriptions:
        await subscription.unsubscribe()


@pytest_asyncio.fixture
async def broker(nats_url: str) -> AsyncIterator[Broker]:
    connection = await Broker.connect(nats_url, "gateway-tests")
    try:
        yield connection
    finally:
        await connection.close()


@pytest_asyncio.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as exits:
        yield exits


@pytest.fixture
def model() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def register(broker: Broker) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    from strata_runtime.plane import ensure_event_plane

    await ensure_event_plane(broker)
    kv = await broker.kv(subjects.ENGINE_REGISTRY_BUCKET)
    written: list[str] = []

    async def put(url: str, model: str, engine_id: str | None = None) -> str:
        engine_id = engine_id or f"e-{uuid.uuid4().hex[:10]}"
        registration = EngineRegistration(
            engine_id=engine_id,
            url=url,  # type: ignore[arg-type]
            model=model,
            max_model_len=4096,
            block_size=32,
            hash_scheme=HashScheme.SHA256,
            agent_id="tests",
            heartbeat_ts=time.time(),
        )
        await kv.put(engine_id, encode(registration))
        written.append(engine_id)
        return engine_id

    yield put
    for engine_id in written:
        await kv.delete(engine_id)


@pytest_asyncio.fixture
async def sim_engine(stack: AsyncExitStack) -> Callable[[str], Awaitable[str]]:
    profile = load_profile("tiny-cpu")

    async def start(model: str) -> str:
        return await stack.enter_async_context(run_single_engine(profile, model, time_scale=20.0))

    return start


@pytest_asyncio.fixture
async def fake_engine(stack: AsyncExitStack) -> Callable[..., Awaitable[FakeEngine]]:
    async def start(model: str, mode: str = "ok") -> FakeEngine:
        engine = FakeEngine(model, mode)
        await engine.start()
        stack.push_async_callback(engine.close)
        return engine

    return start


@pytest_asyncio.fixture
async def start_gateway(nats_url: str, tmp_path: Any) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    started: list[Gateway] = []

    async def start(*, real_ports: bool = False, limiter: Limiter | None = None, **overrides: Any) -> Gateway:
        """A gateway with auth off, no limits (or `limiter`) and a RecordingSink; `real_ports`: the app's own."""
        overrides.setdefault("auth_enabled", real_ports)
        settings = GatewaySettings(nats_url=nats_url, port=free_port(), usage_spool_dir=str(tmp_path), **overrides)
        sink = RecordingSink()
        ports = Ports(OpenAuthenticator(), limiter or NoLimits(), sink)
        service = build_app(settings, ports=None if real_ports else ports)
        shutdown = GracefulShutdown(signals=())
        task = asyncio.create_task(run_service(service, shutdown))
        gateway = Gateway(f"http://127.0.0.1:{settings.port}", sink, shutdown, task)
        started.append(gateway)

        async def ready() -> bool:
            if task.done():
                task.result()
            async with aiohttp.ClientSession() as session, session.get(f"{gateway.url}/readyz") as response:
                return response.status == 200

        await poll_until(ready, timeout=15, what="gateway ready")
        return gateway

    yield start
    for gateway in started:
        gateway.shutdown.request_stop("test over")
        await asyncio.wait_for(gateway.task, 30)
