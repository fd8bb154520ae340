"""build_app(settings): the engine agent's resources, tasks, hooks and probes.

    on_start: NATS ─▶ event plane (streams, buckets) ─▶ HTTP session, ZMQ sockets
              ─▶ per engine: scrape task (+ KV relay task) ─▶ registry heartbeat task
    on_stop:  cancel tasks ─▶ delete registry keys ─▶ close ZMQ, HTTP ─▶ close NATS

Readiness: NATS connected and every engine scraped successfully at least once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import zmq.asyncio
from aiohttp import web

from strata_contracts import subjects
from strata_engineagent.adapters.engine_http import HttpEngineClient
from strata_engineagent.adapters.zmq_kv import ZmqKvSubscriber, ZmqReplayClient
from strata_engineagent.domain.registry import EngineState
from strata_engineagent.handlers.kv_events import KvRelay
from strata_engineagent.handlers.load import LoadScraper
from strata_engineagent.handlers.registry import RegistryHeartbeat
from strata_engineagent.settings import EngineAgentSettings
from strata_runtime import Broker, Service
from strata_runtime.plane import ensure_event_plane

__all__ = ["AGENT_KEY", "EngineAgent", "build_app"]

_log = logging.getLogger(__name__)


def build_app(settings: EngineAgentSettings) -> Service:
    """The engine agent service for `settings` (no I/O until it is run)."""
    service = Service(name="engineagent", settings=settings)
    agent = EngineAgent(settings, service)
    service.on_start.append(agent.start)
    service.on_stop.append(agent.stop)
    service.probes.add_check("nats", agent.nats_connected)
    service.probes.add_check("engines_scraped", agent.engines_scraped)
    service.http[AGENT_KEY] = agent
    return service


class EngineAgent:
    """The running parts of one agent process (owned by its Service's hooks).

    Args:
        settings: the agent's settings.
        service: the service whose in-flight counter the tasks report to.
    """

    def __init__(self, settings: EngineAgentSettings, service: Service) -> None:
        self.settings = settings
        self.agent_id = settings.agent_id or settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.states = [EngineState(spec) for spec in settings.engines]
        self.broker: Broker | None = None
        self.relays: dict[str, KvRelay] = {}
        self.registry: RegistryHeartbeat | None = None
        self._service = service
        self._session: aiohttp.ClientSession | None = None
        self._zmq: zmq.asyncio.Context | None = None
        self._subscribers: list[ZmqKvSubscriber] = []
        self._tasks: list[asyncio.Task[None]] = []

    def nats_connected(self) -> bool:
        """Readiness: the NATS connection is up."""
        return self.broker is not None and self.broker.connected

    def engines_scraped(self) -> bool:
        """Readiness: every engine answered at least one scrape."""
        return all(state.scrapes_ok > 0 for state in self.states)

    async def start(self) -> None:
        """Connect, create the event plane, and start every engine's tasks."""
        settings = self.settings
        if not settings.engines:
            _log.warning("no engines configured (STRATA_ENGINEAGENT_ENGINES): the agent idles")
        self.broker = await Broker.connect(settings.nats_url, f"engineagent-{self.agent_id}")
        await ensure_event_plane(self.broker)
        kv = await self.broker.kv(subjects.ENGINE_REGISTRY_BUCKET)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=4, keepalive_timeout=30))
        self._zmq = zmq.asyncio.Context()
        clients = {state.spec.engine_id: HttpEngineClient(self._session, str(state.spec.url)) for state in self.states}
        self.registry = RegistryHeartbeat(
            self.states,
            clients,
            kv,
            agent_id=self.agent_id,
            interval=settings.heartbeat_interval_s,
            ttl=settings.registry_ttl_s,
            discovery_timeout=settings.discovery_timeout_s,
        )
        run_id = str(int(time.time() * 1000))
        for state in self.states:
            scraper = LoadScraper(
                state,
                clients[state.spec.engine_id],
                self.broker,
                interval=settings.scrape_interval_ms / 1000,
                timeout=settings.scrape_timeout_ms / 1000,
                ttl=settings.registry_ttl_s,
                inflight=self._service.inflight,
                on_change=self.registry.wake,
            )
            self._spawn(f"scrape-{state.spec.engine_id}", scraper.run())
            relay = self._relay(state, run_id)
            if relay is not None:
                self.relays[state.spec.engine_id] = relay
                self._spawn(f"kv-{state.spec.engine_id}", relay.run())
        self._spawn("registry", self.registry.run())

    def _relay(self, state: EngineState, run_id: str) -> KvRelay | None:
        spec = state.spec
        if spec.kv_events_endpoint is None or self._zmq is None or self.broker is None:
            return None
        subscriber = ZmqKvSubscriber(self._zmq, spec.kv_events_endpoint, topic=spec.kv_topic, bind=spec.kv_events_bind)
        self._subscribers.append(subscriber)
        replay = None
        if spec.kv_replay_endpoint is not None:
            replay = ZmqReplayClient(self._zmq, spec.kv_replay_endpoint, self.settings.kv_replay_timeout_s)
        return KvRelay(
            spec.engine_id,
            self.broker,
            subscriber,
            replay,
            inflight=self._service.inflight,
            publish_timeout=self.settings.kv_publish_timeout_s,
            run_id=run_id,
        )

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=f"engineagent-{name}")
        task.add_done_callback(_report_crash)
        self._tasks.append(task)

    async def stop(self) -> None:
        """Stop the tasks, withdraw the registrations, close every resource (each may be unopened)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.registry is not None and self.broker is not None and self.broker.connected:
            await self.registry.withdraw()
        for subscriber in self._subscribers:
            subscriber.close()
        self._subscribers.clear()
        if self._zmq is not None:
            self._zmq.destroy(linger=0)
            self._zmq = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.broker is not None:
            await self.broker.close()


AGENT_KEY = web.AppKey("engineagent", EngineAgent)
"""Where build_app leaves the agent in the service's aiohttp app (for tests and debugging)."""


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("task %s crashed", task.get_name(), exc_info=task.exception())
