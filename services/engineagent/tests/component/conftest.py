"""Fixtures of the component tests: a programmable fake vLLM engine and an in-process agent.

`make_engine()` starts a fake engine: an aiohttp server on a free port serving
`/metrics` (vLLM 0.32 names, `_total` counters with `_created` samples,
`vllm:cache_config_info`), `/v1/models` and `/version`, plus a ZMQ XPUB (a PUB that
also tells when a subscriber joined) and a ROUTER answering replay requests like
vLLM's publisher. `start_agent(*engines)` runs the agent's app in this process with
run_service and stops it gracefully at teardown (or when the test asks).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
import zmq
import zmq.asyncio
from aiohttp import web

from strata_contracts.vllm_kv_events import (
    SEQ_END,
    VllmBlockRemoved,
    VllmBlockStored,
    VllmEventBatch,
    WireShape,
    decode_seq,
    encode_batch,
    encode_seq,
)
from strata_engineagent.app import build_app
from strata_engineagent.settings import EngineAgentSettings
from strata_runtime import GracefulShutdown, Service, run_service
from strata_runtime.probes import HttpServer
from strata_testing import poll_until

BLOCK = 4
TOPIC = b"kv@127.0.0.1:8000@tiny"


@dataclass
class EngineMetrics:
    """The values the fake engine's /metrics page shows."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    preemptions: int = 0
    block_size: int = 128
    num_gpu_blocks: int = 4096
    hash_algo: str = "sha256_cbor"


@dataclass
class FakeEngine:
    """A vLLM-like engine: HTTP surface + KV-event publisher with a replay buffer."""

    model: str = "tiny"
    owned_by: str = "vllm"
    version: dict[str, Any] = field(default_factory=lambda: {"version": "0.32.0"})
    metrics: EngineMetrics = field(default_factory=EngineMetrics)
    failing: bool = False  # /metrics answers 500
    replay_mode: str = "on"  # on | off (never answers)
    forget_before: int = 0  # replay buffer no longer holds seqs below this
    replay_topic_frame: bool = True  # vLLM 0.32 replies [b"", topic, seq, payload]; older ones omit the topic
    shape: WireShape = WireShape.MIXED
    url: str = ""
    events_endpoint: str = ""
    replay_endpoint: str = ""
    next_seq: int = 0
    buffer: dict[int, bytes] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _context: zmq.asyncio.Context | None = None
    _pub: zmq.asyncio.Socket | None = None
    _router: zmq.asyncio.Socket | None = None
    _replay_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/version", self._version)
        server = HttpServer(app, "127.0.0.1", 0)
        port = await server.start()
        self._server = server
        self.url = f"http://127.0.0.1:{port}"
        self._context = zmq.asyncio.Context()
        await self._open_sockets()

    async def _open_sockets(self, pub_port: int | None = None, router_port: int | None = None) -> None:
        assert self._context is not None
        self._pub = self._context.socket(zmq.XPUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._router = self._context.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        if pub_port is None or router_port is None:
            pub_port = self._pub.bind_to_random_port("tcp://127.0.0.1")
            router_port = self._router.bind_to_random_port("tcp://127.0.0.1")
        else:  # the old sockets release their ports asynchronously (ZMQ's I/O thread)
            await _bind_when_free(self._pub, f"tcp://127.0.0.1:{pub_port}")
            await _bind_when_free(self._router, f"tcp://127.0.0.1:{router_port}")
        self.events_endpoint = f"tcp://127.0.0.1:{pub_port}"
        self.replay_endpoint = f"tcp://127.0.0.1:{router_port}"
        self._replay_task = asyncio.create_task(self._serve_replay())

    async def wait_subscribed(self, timeout: float = 5.0) -> None:
        """Wait until a SUB has subscribed (XPUB hands us the subscription message)."""
        assert self._pub is not None
        async with asyncio.timeout(timeout):
            message = await self._pub.recv()
        assert message[:1] == b"\x01", message

    async def publish(self, *, removed: bool = False, drop: bool = False, raw: bytes | None = None) -> int:
        """Publish the next batch (kept for replay) and return its seq.

        Args:
            removed: a BlockRemoved batch instead of a BlockStored one.
            drop: lose it on the wire (it stays replayable).
            raw: send these payload bytes instead of an encoded batch.
        """
        assert self._pub is not None
        seq = self.next_seq
        self.next_seq += 1
        batch = removed_batch(seq) if removed else stored_batch(seq)
        payload = raw if raw is not None else encode_batch(batch, self.shape)
        self.buffer[seq] = payload
        if not drop:
            await self._pub.send_multipart([TOPIC, encode_seq(seq), payload])
        return seq

    async def restart_events(self) -> None:
        """Like an engine restart: sockets closed and reopened on the same ports, seq from 0."""
        pub_port = int(self.events_endpoint.rsplit(":", 1)[1])
        router_port = int(self.replay_endpoint.rsplit(":", 1)[1])
        await self._close_sockets()
        self.next_seq = 0
        self.buffer.clear()
        await self._open_sockets(pub_port, router_port)

    async def _serve_replay(self) -> None:
        assert self._router is not None
        while True:
            identity, _empty, start_frame = await self._router.recv_multipart()
            if self.replay_mode == "off":
                continue
            start = decode_seq(start_frame)
            head = [identity, b"", TOPIC] if self.replay_topic_frame else [identity, b""]
            for seq in sorted(self.buffer):
                if seq >= max(start, self.forget_before):
                    await self._router.send_multipart([*head, encode_seq(seq), self.buffer[seq]])
            end_head = [identity, b"", b""] if self.replay_topic_frame else [identity, b""]
            await self._router.send_multipart([*end_head, encode_seq(SEQ_END), b""])

    async def _close_sockets(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        for socket in (self._pub, self._router):
            if socket is not None:
                socket.close(linger=0)

    async def close(self) -> None:
        await self._close_sockets()
        if self._context is not None:
            self._context.term()
        await self._server.stop()

    async def _metrics(self, _: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=500, text="engine core died")
        return web.Response(text=metrics_page(self.model, self.metrics), content_type="text/plain")

    async def _models(self, _: web.Request) -> web.Response:
        entry = {"id": self.model, "object": "model", "owned_by": self.owned_by, "parent": None, "max_model_len": 4096}
        return web.json_response({"object": "list", "data": [entry]})

    async def _version(self, _: web.Request) -> web.Response:
        return web.json_response(self.version)


async def _bind_when_free(socket: zmq.asyncio.Socket, endpoint: str) -> None:
    async def bound() -> bool:
        socket.bind(endpoint)
        return True

    await poll_until(bound, timeout=5, what=f"bind {endpoint}")


def metrics_page(model: str, m: EngineMetrics) -> str:
    labels = f'engine="0",model_name="{model}"'
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{labels}}} {float(m.running)}",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{labels}}} {float(m.waiting)}",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{labels}}} {m.kv_usage}",
        "# TYPE vllm:cache_config_info gauge",
        f'vllm:cache_config_info{{block_size="{m.block_size}",enable_prefix_caching="True",engine="0",'
        f'num_gpu_blocks="{m.num_gpu_blocks}",prefix_caching_hash_algo="{m.hash_algo}"}} 1.0',
    ]
    for name, value in (
        ("prompt_tokens", m.prompt_tokens),
        ("generation_tokens", m.generation_tokens),
        ("prefix_cache_queries", m.prefix_queries),
        ("prefix_cache_hits", m.prefix_hits),
        ("num_preemptions", m.preemptions),
    ):
        lines += [
            f"# TYPE vllm:{name}_total counter",
            f"vllm:{name}_total{{{labels}}} {float(value)}",
            f"# TYPE vllm:{name}_created gauge",
            f"vllm:{name}_created{{{labels}}} 1.7955963895e+09",
        ]
    lines += [
        "# TYPE vllm:time_to_first_token_seconds histogram",
        f'vllm:time_to_first_token_seconds_bucket{{{labels},le="0.1"}} 1.0',
        f'vllm:time_to_first_token_seconds_bucket{{{labels},le="+Inf"}} 2.0',
        f"vllm:time_to_first_token_seconds_count{{{labels}}} 2.0",
        f"vllm:time_to_first_token_seconds_sum{{{labels}}} 0.4",
    ]
    return "\n".join(lines) + "\n"


def stored_batch(seq: int) -> VllmEventBatch:
    """A batch whose content identifies its seq: one stored block with hash 1000 + seq (parent 999 + seq)."""
    return VllmEventBatch(
        ts=1_795_500_000.0 + seq,
        events=[VllmBlockStored([1000 + seq], None if seq == 0 else 999 + seq, list(range(BLOCK)), BLOCK)],
    )


def removed_batch(seq: int) -> VllmEventBatch:
    """Block 1000 + seq removed, on DP rank 0."""
    return VllmEventBatch(ts=1_795_500_000.0 + seq, events=[VllmBlockRemoved([1000 + seq])], data_parallel_rank=0)


@pytest_asyncio.fixture
async def make_engine() -> AsyncIterator[Callable[..., Awaitable[FakeEngine]]]:
    engines: list[FakeEngine] = []

    async def make(**knobs: Any) -> FakeEngine:
        engine = FakeEngine(**knobs)
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.close()


@dataclass
class RunningAgent:
    """An agent running in this process."""

    service: Service
    shutdown: GracefulShutdown
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.shutdown.request_stop("test")
        await asyncio.wait_for(asyncio.shield(self.task), 30)

    async def ready(self) -> bool:
        if self.task.done():
            self.task.result()  # surface a failed start at once
            raise AssertionError("agent stopped")
        return not await self.service.probes.failing()


@pytest_asyncio.fixture
async def start_agent(nats_url: str) -> AsyncIterator[Callable[..., Awaitable[RunningAgent]]]:
    agents: list[RunningAgent] = []

    async def start(engines: list[dict[str, Any]], *, wait_ready: bool = True, **settings: Any) -> RunningAgent:
        values: dict[str, Any] = {
            "nats_url": nats_url,
            "engines": engines,
            "agent_id": "test-agent",
            "scrape_interval_ms": 20,
            "heartbeat_interval_s": 0.2,
            "registry_ttl_s": 1.0,
            "kv_replay_timeout_s": 0.5,
            "shutdown_grace_s": 2.0,
            **settings,
        }
        service = build_app(EngineAgentSettings.model_validate(values))
        shutdown = GracefulShutdown(signals=())
        agent = RunningAgent(service, shutdown, asyncio.create_task(run_service(service, shutdown)))
        agents.append(agent)
        if wait_ready:
            await poll_until(agent.ready, timeout=10, what="agent ready")
        return agent

    yield start
    for agent in agents:
        if not agent.task.done():
            await agent.stop()
