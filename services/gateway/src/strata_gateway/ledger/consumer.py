"""The ledger's loop: a durable JetStream pull consumer on USAGE_ALL writing PostgreSQL.

    fetch ≤ batch_size ─▶ decode (unreadable: term) ─▶ one INSERT … ON CONFLICT DO NOTHING,
    committed ─▶ ack each ─▶ next fetch

A record is acknowledged only after its row is committed, so a crash, a killed database
connection or a lost NATS connection at any point leads to redelivery (after a nak with
back-off, or after `ack_wait_s`), never to loss; the idempotent insert absorbs the
repeats. The durable consumer keeps the position across ledger restarts; several ledger
replicas sharing the durable name split the stream between them.

Failures: a fetch error (NATS down, consumer or stream gone after a NATS restart without
its store) re-creates the stream and consumer after a back-off; a PostgreSQL error naks
the batch with a back-off (asyncpg's pool replaces broken connections on the next use).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

import asyncpg
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter
from pydantic import ValidationError

from strata_contracts import subjects
from strata_contracts.messages import UsageRecord
from strata_gateway.ledger.writer import write_batch
from strata_runtime import Broker, InFlight
from strata_runtime.plane import ensure_event_plane

__all__ = ["LedgerConsumer"]

_log = logging.getLogger(__name__)
RECORDS = Counter("strata_ledger_records_total", "Usage records handled: inserted, duplicate, invalid.", ["outcome"])
FAILURES = Counter("strata_ledger_failures_total", "Failed fetches and inserts.", ["stage"])


class LedgerConsumer:
    """Moves usage records from JetStream into PostgreSQL until stopped.

    Args:
        broker: NATS connection (owned by the caller).
        pool: PostgreSQL pool (owned by the caller).
        inflight: counts the batch being written, so a graceful shutdown lets it finish.
        durable: durable consumer name.
        batch_size: records per fetch and per insert.
        fetch_timeout_s: longest wait for a batch to fill.
        ack_wait_s: redelivery delay of an unacknowledged record.
        retry_max_s: longest back-off after a failure.
    """

    def __init__(
        self,
        broker: Broker,
        pool: asyncpg.Pool[asyncpg.Record],
        inflight: InFlight,
        *,
        durable: str = "strata-ledger",
        batch_size: int = 256,
        fetch_timeout_s: float = 1.0,
        ack_wait_s: float = 30.0,
        retry_max_s: float = 5.0,
    ) -> None:
        self._broker, self._pool, self._inflight = broker, pool, inflight
        self._durable, self._batch, self._fetch_timeout = durable, batch_size, fetch_timeout_s
        self._ack_wait, self._retry_max = ack_wait_s, retry_max_s
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stopping = asyncio.Event()
        self._backoff = 0.0
        self.db_ok = True
        """False after a failed insert, until the next successful one (readiness)."""

    @property
    def bound(self) -> bool:
        """Whether the pull subscription is established (readiness)."""
        return self._sub is not None

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in progress."""
        self._stopping.set()

    async def run(self) -> None:
        """Fetch, insert, ack, until :meth:`stop`; every failure is retried with back-off."""
        while not self._stopping.is_set():
            if self._sub is None and not await self._bind():
                await self._pause()
                continue
            assert self._sub is not None
            try:
                msgs = await self._sub.fetch(self._batch, timeout=self._fetch_timeout)
            except nats.errors.TimeoutError:
                continue
            except Exception as exc:  # noqa: BLE001 - NATS down, consumer gone, …: rebind after a pause
                FAILURES.labels("fetch").inc()
                _log.warning("usage fetch failed: %r", exc)
                await self._unbind()
                await self._pause()
                continue
            with self._inflight.track():
                try:
                    await self._handle(msgs)
                except Exception:  # noqa: BLE001 - unacknowledged records are redelivered; the loop must live
                    FAILURES.labels("handle").inc()
                    _log.exception("usage batch failed; its records will be redelivered")
                    await self._pause()

    async def close(self) -> None:
        """Drop the subscription (the durable consumer and its position stay on the server)."""
        await self._unbind()

    async def _bind(self) -> bool:
        try:
            await ensure_event_plane(self._broker)
            config = ConsumerConfig(
                durable_name=self._durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self._ack_wait,
                max_deliver=-1,
                max_ack_pending=max(1000, self._batch * 4),
                filter_subject=subjects.USAGE_ALL,
            )
            self._sub = await self._broker.js.pull_subscribe(
                subjects.USAGE_ALL, durable=self._durable, stream=subjects.USAGE_STREAM, config=config
            )
        except Exception as exc:  # noqa: BLE001 - retried after a pause
            FAILURES.labels("bind").inc()
            _log.warning("cannot bind the usage consumer: %r", exc)
            return False
        _log.info("usage consumer bound", extra={"durable": self._durable})
        self._backoff = 0.0
        return True

    async def _unbind(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - the connection may be gone already
                _log.debug("unsubscribe failed: %r", exc)

    async def _pause(self) -> None:
        """Wait the next back-off step (0.1 s doubling up to retry_max_s), or until stopped."""
        self._backoff = min(self._retry_max, max(0.1, self._backoff * 2))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self._backoff)

    async def _handle(self, msgs: list[Msg]) -> None:
        good: list[Msg] = []
        records: dict[str, UsageRecord] = {}
        for msg in msgs:
            try:
                record = UsageRecord.model_validate_json(msg.data)
            except ValidationError as exc:
                RECORDS.labels("invalid").inc()
                _log.error("unreadable usage record on %s dropped: %s", msg.subject, exc.errors()[0]["msg"])
                await self._settle(msg.term())
                continue
            good.append(msg)
            records.setdefault(record.request_id, record)
        try:
            inserted = await write_batch(self._pool, list(records.values()))
        except Exception as exc:  # noqa: BLE001 - asyncpg raises several unrelated types; all mean "retry"
            FAILURES.labels("insert").inc()
            self.db_ok = False
            _log.warning("usage insert of %d records failed, will be redelivered: %r", len(good), exc)
            await self._pause()
            for msg in good:  # redeliver now: the pause was the back-off
                await self._settle(msg.nak())
            return
        self.db_ok = True
        self._backoff = 0.0
        RECORDS.labels("inserted").inc(inserted)
        RECORDS.labels("duplicate").inc(len(good) - inserted)
        for msg in good:
            await self._settle(msg.ack())

    @staticmethod
    async def _settle(ack: Awaitable[None]) -> None:
        """Await an ack/nak/term; a lost acknowledgement only means a harmless redelivery."""
        try:
            await ack
        except Exception as exc:  # noqa: BLE001 - see docstring
            _log.debug("acknowledgement failed: %r", exc)
