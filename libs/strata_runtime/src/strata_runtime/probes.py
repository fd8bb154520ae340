"""The HTTP surface every service has: `/healthz`, `/readyz`, `/metrics`.

`/healthz` answers 200 while the process serves HTTP at all. `/readyz` answers 200 only
when the service has started, is not draining, and every registered readiness check
passes; otherwise 503 with the failing checks named. `/metrics` is the Prometheus text
exposition of the process registry. Services add their own routes to the same app.

    Probes.healthz() / readyz() / metrics() ─▶ ProbeAnswer (status, body, content type)
      ├─ Probes.install(app): the routes on an aiohttp app, served by HttpServer (default)
      └─ a service's own HTTP server (Service.server) routes the three paths to them itself
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

__all__ = ["HttpServer", "ProbeAnswer", "Probes", "ReadyCheck"]

ReadyCheck = Callable[[], bool | Awaitable[bool]]
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeAnswer:
    """A probe's HTTP answer, whichever server writes it.

    Attributes:
        status: HTTP status.
        body: the body bytes.
        content_type: the Content-Type value.
    """

    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, body: dict[str, object]) -> ProbeAnswer:
        """A JSON answer."""
        return cls(status, orjson.dumps(body))


_HEALTHY = ProbeAnswer.json(200, {"status": "ok"})
_READY = ProbeAnswer.json(200, {"status": "ready"})


class Probes:
    """Readiness state and the probe routes of one service.

    Args:
        registry: Prometheus registry exposed on /metrics.
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.started = False
        self.draining = False
        self._checks: dict[str, ReadyCheck] = {}

    def add_check(self, name: str, check: ReadyCheck) -> None:
        """Register a readiness check; it must be cheap (called on every /readyz)."""
        self._checks[name] = check

    async def failing(self) -> list[str]:
        """Names of the conditions that keep the service from being ready."""
        failing = [] if self.started else ["starting"]
        if self.draining:
            failing.append("draining")
        for name, check in self._checks.items():
            try:
                result = check()
                ok = await result if inspect.isawaitable(result) else result
            except Exception as exc:  # noqa: BLE001 - a failing check is an answer, not a crash
                _log.warning("readiness check %s raised %r", name, exc)
                ok = False
            if not ok:
                failing.append(name)
        return failing

    def healthz(self) -> ProbeAnswer:
        """/healthz: 200 while the process serves HTTP at all."""
        return _HEALTHY

    async def readyz(self) -> ProbeAnswer:
        """/readyz: 200 when ready, else 503 naming the failing conditions."""
        failing = await self.failing()
        if failing:
            return ProbeAnswer.json(503, {"status": "not ready", "failing": failing})
        return _READY

    def metrics(self) -> ProbeAnswer:
        """/metrics: the Prometheus text exposition of the registry."""
        return ProbeAnswer(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def install(self, app: web.Application) -> None:
        """Add /healthz, /readyz and /metrics to `app`."""
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)

    async def _healthz(self, _: web.Request) -> web.Response:
        return _aiohttp(self.healthz())

    async def _readyz(self, _: web.Request) -> web.Response:
        return _aiohttp(await self.readyz())

    async def _metrics(self, _: web.Request) -> web.Response:
        return _aiohttp(self.metrics())


def _aiohttp(answer: ProbeAnswer) -> web.Response:
    response = web.Response(status=answer.status, body=answer.body)
    response.headers["Content-Type"] = answer.content_type  # verbatim (the metrics type has parameters)
    return response


class HttpServer:
    """Runs an aiohttp application on host:port (port 0 = a free one)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._host = host
        self._port = port
        self.port = 0

    async def start(self) -> int:
        """Bind and serve; returns the actual port."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp exposes no public accessor for the bound socket
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting and close connections (waits up to `grace` for open handlers)."""
        await self._runner.shutdown()
        await self._runner.cleanup()
        del grace
