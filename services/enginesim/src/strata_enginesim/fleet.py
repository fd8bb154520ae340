"""Many simulated engines in one process, each with its own HTTP port and KV-event sockets.

Each engine is what a vLLM server would be: an HTTP server with the OpenAI surface,
`/metrics` from its own registry, and (optionally) a ZMQ PUB + replay ROUTER pair for
KV events. The fleet's own service port (probes, `/engines`) is separate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.trace import SpanKind

from strata_contracts.vllm_kv_events import WireShape
from strata_enginesim.adapters.zmq_events import ZmqKvEventPublisher
from strata_enginesim.domain.tokenizer import SimTokenizer
from strata_enginesim.engine import EngineConfig, SimEngine
from strata_enginesim.handlers.metrics import VllmMetrics
from strata_enginesim.handlers.openai import add_openai_routes
from strata_runtime.net import free_port
from strata_runtime.probes import HttpServer
from strata_runtime.shutdown import InFlight
from strata_runtime.tracing import extract_context, tracer

__all__ = ["EngineHandle", "EngineOptions", "SimFleet"]

_log = logging.getLogger(__name__)
_tracer = tracer(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """Per-fleet options shared by every engine."""

    host: str
    base_port: int
    served_model_name: str
    engine_id_prefix: str
    kv_events: bool
    kv_events_base_port: int
    kv_events_shape: WireShape
    engine_config: EngineConfig
    api: dict[str, Any]  # keyword options of add_openai_routes


@dataclass
class EngineHandle:
    """A running engine and where it listens."""

    engine_id: str
    engine: SimEngine
    server: HttpServer
    url: str
    publisher: ZmqKvEventPublisher | None
    kv_events_endpoint: str | None
    kv_replay_endpoint: str | None

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (for `/engines` and the agent's configuration)."""
        return {
            "engine_id": self.engine_id,
            "kind": "enginesim",
            "url": self.url,
            "kv_events_endpoint": self.kv_events_endpoint,
            "kv_replay_endpoint": self.kv_replay_endpoint,
        }


class SimFleet:
    """Starts and stops `count` engines.

    Args:
        count: number of engines.
        options: what they share.
        tokenizer: the (stateless) tokenizer they share.
        inflight: counts in-flight HTTP requests for graceful drain.
    """

    def __init__(self, count: int, options: EngineOptions, tokenizer: SimTokenizer, inflight: InFlight) -> None:
        self.count = count
        self.options = options
        self.tokenizer = tokenizer
        self.inflight = inflight
        self.engines: list[EngineHandle] = []

    async def start(self) -> None:
        """Start every engine (HTTP server, step loop, event sockets)."""
        for index in range(self.count):
            self.engines.append(await self._start_one(index))
        _log.info("engines up", extra={"engines": [e.describe() for e in self.engines]})

    async def _start_one(self, index: int) -> EngineHandle:
        opts = self.options
        engine_id = f"{opts.engine_id_prefix}-{index}"
        port = opts.base_port + index if opts.base_port else free_port(opts.host)
        publisher = pub_endpoint = replay_endpoint = None
        kv_config: dict[str, Any] | None = None
        if opts.kv_events:
            pub_port = opts.kv_events_base_port + 2 * index if opts.kv_events_base_port else free_port(opts.host)
            replay_port = opts.kv_events_base_port + 2 * index + 1 if opts.kv_events_base_port else free_port(opts.host)
            pub_endpoint = f"tcp://{opts.host}:{pub_port}"
            replay_endpoint = f"tcp://{opts.host}:{replay_port}"
            topic = f"kv@{opts.host}:{port}@{opts.served_model_name}"
            publisher = ZmqKvEventPublisher(
                endpoint=pub_endpoint,
                replay_endpoint=replay_endpoint,
                topic=topic,
                shape=opts.kv_events_shape,
                data_parallel_rank=0,  # what a vLLM engine without data parallelism stamps
                bind=True,
            )
            kv_config = {
                "0": {
                    "enable_kv_cache_events": True,
                    "publisher": "zmq",
                    "endpoint": pub_endpoint,
                    "replay_endpoint": replay_endpoint,
                    "topic": topic,
                }
            }
        engine = SimEngine(opts.engine_config, kv_sink=publisher)
        app = web.Application(middlewares=[self._track_inflight])
        config = opts.engine_config
        metrics = VllmMetrics(
            engine,
            opts.served_model_name,
            enable_prefix_caching=config.enable_prefix_caching,
            prefix_caching_hash_algo=config.hash_scheme.value,
            cache_config={
                "kv_cache_memory_bytes": engine.num_blocks
                * engine.block_size
                * config.profile.engine.kv_bytes_per_token
            },
            clock=engine.now,
        )
        add_openai_routes(app, engine, self.tokenizer, metrics=metrics, kv_events_config=kv_config, **opts.api)
        server = HttpServer(app, opts.host, port)
        await server.start()
        engine.start()
        return EngineHandle(
            engine_id, engine, server, f"http://{opts.host}:{server.port}", publisher, pub_endpoint, replay_endpoint
        )

    @web.middleware
    async def _track_inflight(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Count the request for graceful drain; one server span per request (trace context honoured)."""
        parent = extract_context(request.headers)
        with (
            self.inflight.track(),
            _tracer.start_as_current_span(f"{request.method} {request.path}", context=parent, kind=SpanKind.SERVER),
        ):
            response: web.StreamResponse = await handler(request)
            return response

    async def stop(self) -> None:
        """Stop HTTP servers, engines and event sockets (idempotent)."""
        for handle in self.engines:
            await handle.server.stop()
            await handle.engine.stop()
            if handle.publisher is not None:
                handle.publisher.close()
        self.engines.clear()

    def serving(self) -> bool:
        """Readiness: every engine started."""
        return len(self.engines) == self.count
