"""build_app(settings): the usage ledger writer's resources, loop, hooks and probes.

    on_start: PostgreSQL pool ─▶ migrations (retried up to startup_timeout_s) ─▶ NATS
              ─▶ consumer loop (binds the stream and the durable consumer itself)
    on_stop:  stop the loop after its batch ─▶ unsubscribe ─▶ close NATS ─▶ close the pool

Readiness: NATS connected, consumer loop running and bound, last insert succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import asyncpg
from aiohttp import web

from strata_gateway.adapters.migrate import migrate
from strata_gateway.ledger.consumer import LedgerConsumer
from strata_gateway.ledger.settings import LedgerSettings
from strata_runtime import Broker, Service

__all__ = ["APP_NAME", "LEDGER_KEY", "Ledger", "build_app"]

APP_NAME = "strata-ledger"
"""application_name of the ledger's PostgreSQL sessions (find them in pg_stat_activity)."""
_log = logging.getLogger(__name__)


def build_app(settings: LedgerSettings) -> Service:
    """The ledger service for `settings` (no I/O until it is run)."""
    service = Service(name="ledger", settings=settings)
    ledger = Ledger(settings, service)
    service.on_start.append(ledger.start)
    service.on_stop.append(ledger.stop)
    service.probes.add_check("nats", ledger.nats_connected)
    service.probes.add_check("consumer", ledger.consumer_bound)
    service.probes.add_check("postgres", ledger.database_ok)
    service.http[LEDGER_KEY] = ledger
    return service


class Ledger:
    """The running parts of one ledger process (owned by its Service's hooks)."""

    def __init__(self, settings: LedgerSettings, service: Service) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool[asyncpg.Record] | None = None
        self.broker: Broker | None = None
        self.consumer: LedgerConsumer | None = None
        self._service = service
        self._task: asyncio.Task[None] | None = None

    def nats_connected(self) -> bool:
        """Readiness: the NATS connection is up."""
        return self.broker is not None and self.broker.connected

    def consumer_bound(self) -> bool:
        """Readiness: the loop runs and its durable pull subscription exists."""
        running = self._task is not None and not self._task.done()
        return running and self.consumer is not None and self.consumer.bound

    def database_ok(self) -> bool:
        """Readiness: the last insert (if any) succeeded."""
        return self.consumer is not None and self.consumer.db_ok

    async def start(self) -> None:
        """Open the pool, migrate, connect to NATS and start the consumer loop."""
        s = self.settings
        self.pool = await self._open_database()
        name = f"ledger-{s.instance_id or f'{socket.gethostname()}-{os.getpid()}'}"
        self.broker = await Broker.connect(s.nats_url, name)
        self.consumer = LedgerConsumer(
            self.broker, self.pool, self._service.inflight, durable=s.durable, batch_size=s.batch_size,
            fetch_timeout_s=s.fetch_timeout_s, ack_wait_s=s.ack_wait_s, retry_max_s=s.retry_max_s,
        )  # fmt: skip
        self._task = asyncio.create_task(self.consumer.run(), name="ledger-consumer")
        self._task.add_done_callback(_report_crash)

    async def _open_database(self) -> asyncpg.Pool[asyncpg.Record]:
        """Pool + migrations, retried with back-off for up to startup_timeout_s (PostgreSQL may be restarting)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + s.startup_timeout_s, 0.1
        while True:
            pool: asyncpg.Pool[asyncpg.Record] | None = None
            try:
                pool = await asyncpg.create_pool(
                    s.database_url, min_size=1, max_size=s.pool_size, server_settings={"application_name": APP_NAME}
                )
                await migrate(pool)
                return pool
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                if pool is not None:
                    pool.terminate()
                if loop.time() + delay > deadline:
                    raise
                _log.warning("database not usable yet (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, s.retry_max_s)

    async def stop(self) -> None:
        """Finish the batch in progress, then close everything (each may be unopened)."""
        if self.consumer is not None:
            self.consumer.stop()
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=self.settings.fetch_timeout_s + 5)
            if not done:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.consumer is not None:
            await self.consumer.close()
        if self.broker is not None:
            await self.broker.close()
        if self.pool is not None:
            await self.pool.close()


LEDGER_KEY = web.AppKey("ledger", Ledger)
"""Where build_app leaves the ledger in the service's aiohttp app (for tests and debugging)."""


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("ledger loop crashed", exc_info=task.exception())
