"""Scrape loop of one engine: `/metrics` in, EngineLoad on `strata.engine.v1.load.<engine>` out.

Runs every scrape interval (ticks that fall behind are skipped, never bunched).
A failed scrape still publishes a load, with `healthy=False`, so routers notice a
dead engine within one interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import nats.errors

from strata_contracts import subjects
from strata_engineagent.adapters.engine_http import EngineClient, EngineUnreachable
from strata_engineagent.domain.load import WANTED_SAMPLES, LoadTracker, NotEngineMetrics, snapshot_from
from strata_engineagent.domain.promtext import parse_families
from strata_engineagent.domain.registry import EngineState
from strata_engineagent.telemetry import SCRAPE_SECONDS, SCRAPES
from strata_runtime import Broker, InFlight

__all__ = ["LoadScraper"]

_log = logging.getLogger(__name__)


class LoadScraper:
    """Scrapes one engine and publishes its load; :meth:`run` is one task.

    Args:
        state: the engine's shared state (updated after every scrape).
        client: the engine's HTTP client.
        broker: the app's NATS broker.
        interval: seconds between scrapes.
        timeout: deadline of one scrape, seconds.
        ttl: registry TTL, seconds (a return after longer silence counts as a change).
        inflight: the service's in-flight counter.
        on_change: called when the registry should be refreshed now.
    """

    def __init__(
        self,
        state: EngineState,
        client: EngineClient,
        broker: Broker,
        *,
        interval: float,
        timeout: float,
        ttl: float,
        inflight: InFlight,
        on_change: Callable[[], None],
    ) -> None:
        self.state = state
        self._engine_id = state.spec.engine_id
        self._client = client
        self._broker = broker
        self._interval = interval
        self._timeout = timeout
        self._ttl = ttl
        self._inflight = inflight
        self._on_change = on_change
        self._tracker = LoadTracker(self._engine_id)
        self._subject = subjects.engine_load(self._engine_id)

    async def run(self) -> None:
        """Scrape every interval until cancelled."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            with self._inflight.track():
                try:
                    await self.scrape_once()
                except Exception:  # noqa: BLE001 - a bug must not end the scrape loop
                    _log.exception("scrape of %s failed unexpectedly", self._engine_id)
            next_at = max(next_at + self._interval, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async def scrape_once(self) -> None:
        """One scrape and one EngineLoad publish."""
        started = time.monotonic()
        try:
            text = await self._client.metrics(self._timeout)
            snap = snapshot_from(parse_families(text, WANTED_SAMPLES))
        except (EngineUnreachable, NotEngineMetrics) as exc:
            SCRAPES.labels(self._engine_id, "failed").inc()
            if self.state.scrape_failed():
                _log.warning("engine %s scrape failed: %s", self._engine_id, exc)
            load = self._tracker.failed(ts=time.time())
        else:
            now = time.monotonic()
            SCRAPES.labels(self._engine_id, "ok").inc()
            SCRAPE_SECONDS.labels(self._engine_id).observe(now - started)
            if self.state.scrape_ok(now, snap.cache, self._ttl):
                self._on_change()
            load = self._tracker.observe(snap, ts=time.time(), mono=now)
        try:
            await self._broker.publish(self._subject, load)
        except (nats.errors.Error, OSError) as exc:
            _log.warning("cannot publish load of %s: %r", self._engine_id, exc)
