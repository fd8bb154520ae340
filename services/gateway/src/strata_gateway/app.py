"""build_app(settings): the gateway's resources, routes, hooks and probes.

    HTTP: Http1Server (adapters/http_server) ─▶ Dispatcher (handlers/middleware) ─▶ routes:
          OpenAI (handlers/openai) + /healthz /readyz /metrics (the service's probes)
    on_start: NATS ─▶ event plane (streams, buckets) ─▶ registry watch + load subscription
              ─▶ ports (auth, limits, usage sink) ─▶ upstream keep-alive pool ─▶ request path
    on_stop:  (after in-flight streams drained) request path ─▶ pool ─▶ ports ─▶ watch ─▶ NATS

Ports: tests pass their own; otherwise the usage sink is the ledger's JetStream publisher
(with its on-disk spool), and with `auth_enabled` the PostgreSQL authenticator (migrations
applied at start) and the NATS limiter; with auth disabled one open tenant without limits,
usage still recorded.

Readiness: NATS connected and the registry's current entries loaded.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from strata_contracts import subjects
from strata_gateway.adapters.http_server import Http1Server
from strata_gateway.adapters.registry import RegistryWatcher
from strata_gateway.adapters.router_client import RouterClient
from strata_gateway.adapters.upstream import UpstreamClient, new_session
from strata_gateway.domain.fleet import Fleet
from strata_gateway.domain.local import NoLimits, OpenAuthenticator
from strata_gateway.domain.picking import LeastRequestPicker, Picker, RandomPicker
from strata_gateway.domain.ports import Authenticator
from strata_gateway.handlers.http import probe_routes
from strata_gateway.handlers.middleware import Dispatcher
from strata_gateway.handlers.openai import openai_routes
from strata_gateway.handlers.proxy import Ports, Proxy
from strata_gateway.handlers.routing import Routing
from strata_gateway.settings import GatewaySettings
from strata_gateway.telemetry import ENGINE_IN_FLIGHT, IN_FLIGHT
from strata_runtime import Broker, Service
from strata_runtime.messaging import pub_frame, write_frames
from strata_runtime.plane import ensure_event_plane
from strata_runtime.service import Hook

__all__ = ["Gateway", "build_app"]

_log = logging.getLogger(__name__)


def build_app(settings: GatewaySettings, *, ports: Ports | None = None) -> Service:
    """The gateway service for `settings` (no I/O until it is run).

    Args:
        settings: validated settings.
        ports: authenticator, limiter and usage sink to use instead of the real ones (tests).
    """
    service = Service(name="gateway", settings=settings)
    gateway = Gateway(settings, service, ports)
    dispatch = Dispatcher(openai_routes(gateway) | probe_routes(service.probes))

    def server(host: str, port: int) -> Http1Server:
        return Http1Server(dispatch, host, port, error_page=dispatch.error_page, max_body_bytes=settings.max_body_bytes)

    service.server = server
    service.on_start.append(gateway.start)
    service.on_stop.append(gateway.stop)
    service.probes.add_check("nats", gateway.nats_connected)
    service.probes.add_check("registry", gateway.registry_loaded)
    return service


class Gateway:
    """The running parts of one gateway process (owned by its Service's hooks).

    Args:
        settings: the gateway's settings.
        service: the service whose in-flight counter requests report to.
        ports: injected ports, or None for the configured ones.
    """

    def __init__(self, settings: GatewaySettings, service: Service, ports: Ports | None) -> None:
        self.settings = settings
        self.fleet = Fleet(settings.registry_stale_s, settings.load_stale_s)
        self.broker: Broker | None = None
        self._service = service
        IN_FLIGHT.set_function(lambda: service.inflight.count)  # read at scrape time, free per request
        ENGINE_IN_FLIGHT.read_from(self.fleet.in_flight)
        self._given_ports = ports
        self._ports: Ports | None = None
        self._closers: list[Hook] = []
        self._watcher: RegistryWatcher | None = None
        self._proxy: Proxy | None = None
        self._session_close: Hook | None = None

    @property
    def proxy(self) -> Proxy | None:
        """The request path (None until started)."""
        return self._proxy

    @property
    def authenticator(self) -> Authenticator | None:
        """The authenticator in use (None until started)."""
        return self._ports.authenticator if self._ports is not None else None

    def nats_connected(self) -> bool:
        """Readiness: the NATS connection is up."""
        return self.broker is not None and self.broker.connected

    def registry_loaded(self) -> bool:
        """Readiness: the registry's current entries are in the fleet snapshot."""
        return self._watcher is not None and self._watcher.ready

    async def start(self) -> None:
        """Connect, load the registry, open the ports and the upstream pool."""
        settings = self.settings
        instance = settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.broker = await Broker.connect(settings.nats_url, f"gateway-{instance}")
        await ensure_event_plane(self.broker)
        self._watcher = RegistryWatcher(self.broker, self.fleet)
        await self._watcher.start()
        self._ports = self._given_ports or await self._open_ports(self.broker, instance)
        session = new_session(settings.connect_timeout_s, settings.idle_timeout_s, settings.upstream_max_connections)
        self._session_close = session.close
        router = RouterClient(self.broker, settings.route_timeout_ms / 1000) if settings.router_enabled else None
        pickers: dict[str, Picker] = {"random": RandomPicker(), "least-request": LeastRequestPicker()}
        self._proxy = Proxy(
            settings,
            self._ports,
            fleet=self.fleet,
            routing=Routing(self.fleet, router, pickers, settings.route_timeout_ms),
            upstream=UpstreamClient(session),
            publish_outcomes=self._publish_outcomes,
            inflight=self._service.inflight,
        )
        _log.info(
            "gateway started",
            extra={"engines": self.fleet.engine_ids, "auth": settings.auth_enabled, "router": settings.router_enabled},
        )

    async def stop(self) -> None:
        """Close everything that was opened (each may be unopened)."""
        if self._proxy is not None:
            await self._proxy.close()
            self._proxy = None
        if self._session_close is not None:
            await self._session_close()
            self._session_close = None
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:  # noqa: BLE001 - logged; the rest must still close
                _log.exception("closing a port failed")
        self._closers.clear()
        if self._watcher is not None:
            await self._watcher.stop()
        if self.broker is not None:
            await self.broker.close()

    async def _publish_outcomes(self, outcomes: Sequence[tuple[bytes, Mapping[str, str]]]) -> None:
        """Publish encoded RouteOutcomes (core NATS, one write), each with its request's trace context."""
        if self.broker is not None and self.broker.connected:
            frames = [pub_frame(subjects.ROUTE_OUTCOME, outcome, headers=trace) for outcome, trace in outcomes]
            await write_frames(self.broker.client, frames)

    async def _open_ports(self, broker: Broker, instance: str) -> Ports:
        """The configured ports (their modules are imported only when used).

        Opens, in order: the usage sink (JetStream + spool), then with auth the PostgreSQL
        pool (migrated), the authenticator and the NATS limiter. Each opened resource is
        closed by :meth:`stop`, in reverse order.
        """
        from strata_gateway.ledger.publisher import JetStreamUsageSink

        settings = self.settings
        spool = Path(
            settings.usage_spool_dir or Path(".strata", "gateway-spool", settings.instance_id or socket.gethostname())
        )
        sink = JetStreamUsageSink(broker, spool)
        await sink.start()
        self._closers.append(sink.close)
        if not settings.auth_enabled:
            _log.warning("auth disabled: every request is tenant 'default', without limits")
            return Ports(OpenAuthenticator(), NoLimits(), sink)

        import asyncpg

        from strata_gateway.adapters.auth_pg import PgAuthenticator
        from strata_gateway.adapters.limits_nats import NatsLimiter
        from strata_gateway.adapters.migrate import migrate

        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=settings.database_pool_size)
        self._closers.append(pool.close)
        await migrate(pool)
        limiter = NatsLimiter(broker, instance)
        await limiter.start()
        self._closers.append(limiter.close)
        return Ports(PgAuthenticator(pool, settings.auth_cache_ttl_s), limiter, sink)
