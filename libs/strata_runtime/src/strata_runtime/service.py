"""The life of a service process: settings -> logging/tracing -> start -> ready -> drain -> exit.

A service package provides `build_app(settings) -> Service` (no I/O in it) and a
`__main__` that calls :func:`service_main`. Resources are opened in `on_start` hooks
(in order) and closed in `on_stop` hooks (in reverse order), inside the event loop.
HTTP is served from `Service.http` (aiohttp, probes added here) unless the service
brings its own server through `Service.server` (which then serves the probes itself).

    SIGTERM ──▶ /readyz 503 (draining) ──▶ wait for in-flight work (≤ shutdown_grace_s)
            ──▶ on_stop hooks (reverse) ──▶ HTTP server closed ──▶ exit 0
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NoReturn, Protocol, TypeVar

from aiohttp import web
from prometheus_client import Gauge

from strata_runtime.logs import configure_logging
from strata_runtime.probes import HttpServer, Probes
from strata_runtime.settings import ServiceSettings, SettingsError, load_settings, settings_table
from strata_runtime.shutdown import GracefulShutdown, InFlight
from strata_runtime.tracing import setup_tracing

__all__ = ["Hook", "HttpListener", "ServerFactory", "Service", "run_service", "service_main"]

S = TypeVar("S", bound=ServiceSettings)
Hook = Callable[[], Awaitable[None]]


class HttpListener(Protocol):
    """An HTTP server as :func:`run_service` drives it (:class:`HttpServer` is one)."""

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        ...

    async def stop(self) -> None:
        """Stop listening and close the connections (after their current response)."""
        ...


ServerFactory = Callable[[str, int], HttpListener]
"""Builds a service's own HTTP server for (host, port), inside the running loop; it must
serve `/healthz`, `/readyz` and `/metrics` from the service's :class:`Probes`."""

_log = logging.getLogger(__name__)
IN_FLIGHT = Gauge("strata_in_flight", "Units of work (requests, streams, messages) in progress.")


@dataclass
class Service:
    """A built, not yet started service.

    Attributes:
        name: short service name (`router`, `gateway`, ...).
        settings: its validated settings.
        http: the aiohttp app; probe routes are added by :func:`run_service` (unused
            when `server` is set).
        probes: readiness state and checks.
        inflight: work in progress, drained on shutdown.
        on_start: hooks run in order before the service reports ready.
        on_stop: hooks run in reverse order after draining, also after a failed start
            (so each must tolerate a resource that was never opened).
        server: the service's own HTTP server instead of the aiohttp one, or None.
    """

    name: str
    settings: ServiceSettings
    http: web.Application = field(default_factory=web.Application)
    probes: Probes = field(default_factory=Probes)
    inflight: InFlight = field(default_factory=InFlight)
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    server: ServerFactory | None = None


async def run_service(service: Service, shutdown: GracefulShutdown | None = None) -> None:
    """Run `service` until a stop is requested, then drain and close it.

    Args:
        service: the built service.
        shutdown: stop control; by default one bound to SIGTERM/SIGINT.
    """
    shutdown = shutdown or GracefulShutdown()
    shutdown.install()
    settings = service.settings
    IN_FLIGHT.set_function(lambda: service.inflight.count)
    server: HttpListener
    if service.server is None:
        service.probes.install(service.http)
        server = HttpServer(service.http, settings.host, settings.port)
    else:
        server = service.server(settings.host, settings.port)
    port = await server.start()
    try:
        for hook in service.on_start:
            await hook()
        service.probes.started = True
        _log.info("ready", extra={"host": settings.host, "port": port})
        await shutdown.wait()
        service.probes.draining = True
        await shutdown.drain(service.inflight, settings.shutdown_grace_s)
    finally:
        for hook in reversed(service.on_stop):
            try:
                await hook()
            except Exception:  # noqa: BLE001 - logged; the remaining hooks must still run
                _log.exception("stop hook failed")
        await server.stop()
        _log.info("stopped")


def service_main(
    name: str,
    settings_cls: type[S],
    build_app: Callable[[S], Service],
    argv: Sequence[str] | None = None,
    *,
    flags: Sequence[str] = (),
    loop: Literal["asyncio", "uvloop"] = "asyncio",
) -> NoReturn:
    """Entry point of `python -m strata_<name>`: parse flags, validate settings, run.

    Args:
        name: service name (settings prefix, logs, tracing).
        settings_cls: its settings class.
        build_app: builds the service from validated settings (no I/O).
        argv: command line (default: sys.argv[1:]).
        flags: settings fields also accepted as `--field-name VALUE` flags; a flag
            overrides the environment variable.
        loop: the event loop: "uvloop" for request-path services whose per-request CPU
            matters (the gateway), "asyncio" where sub-millisecond timers matter (uvloop
            rounds timers to whole milliseconds).

    Exits 2 with a one-line message naming the variable when a setting is invalid,
    1 when start-up fails, 0 after a clean shutdown.
    """
    prog = f"python -m strata_{name}"
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Strata {name} service. Configured by environment variables:",
        epilog=_settings_help(settings_cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check-settings", action="store_true", help="validate the settings, print them, exit")
    for field_name in flags:
        info = settings_cls.model_fields[field_name]
        parser.add_argument(f"--{field_name.replace('_', '-')}", dest=field_name, help=info.description)
    args = parser.parse_args(argv)
    overrides = {f: getattr(args, f) for f in flags if getattr(args, f) is not None}
    origins = {f: f"--{f.replace('_', '-')}" for f in flags}
    try:
        settings = load_settings(settings_cls, origins, **overrides)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.check_settings:
        print(settings.model_dump_json(indent=2))
        raise SystemExit(0)
    configure_logging(name, settings.log_level)
    setup_tracing(name, settings.instance_id or f"{socket.gethostname()}-{os.getpid()}")
    try:
        if loop == "uvloop":
            import uvloop

            uvloop.run(run_service(build_app(settings)))
        else:
            asyncio.run(run_service(build_app(settings)))
    except Exception as exc:  # noqa: BLE001 - reported, then a non-zero exit
        _log.exception("service failed")
        print(f"{prog}: failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(0)


def _settings_help(settings_cls: type[ServiceSettings]) -> str:
    rows = settings_table(settings_cls)
    width = max(len(env) for env, _, _ in rows)
    return "\n".join(f"  {env:<{width}}  {desc} [default: {default}]" for env, default, desc in rows)
