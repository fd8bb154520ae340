"""JetStreamUsageSink: the gateway's UsageSink. Publishes each UsageRecord, spools what it cannot.

    record_many(entries) ──connected?──▶ JetStream strata.usage.v1.<tenant>, Nats-Msg-Id = request id ──▶ done
          │                     (a batch of records: one write, the acks awaited together)
          │ no / publish failed or slower than publish_timeout_s
          ▼
    spool (JSONL + fsync, group-committed) ──replay task, when NATS is back──▶ same publish, same msg id
                                                                             └─▶ segment deleted once all acked

Guarantees: `record()` never raises and returns after at most `publish_timeout_s` (+ 0.1 s) plus
one fsync. A record is lost only if the disk refuses the spool write (counted as
`lost` and logged as an error). Delivery is at-least-once: a publish that timed out may
have been stored, and a replay that fails half-way re-publishes its whole segment; the
stream's 10-minute duplicate window drops repeats of the same request id, and the
ledger's `ON CONFLICT (request_id) DO NOTHING` drops any that arrive later than that.
Order: spooled records are replayed in the order they were spooled; live records are
not held back behind the spool (the ledger does not need order).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from strata_contracts import subjects
from strata_contracts.messages import UsageRecord, encode
from strata_gateway.domain.ports import UsageEntry
from strata_gateway.ledger.spool import UsageSpool
from strata_runtime import Broker
from strata_runtime.messaging import JetStreamPipeline
from strata_runtime.plane import ensure_event_plane
from strata_runtime.tracing import inject_headers, tracing_active

__all__ = ["JetStreamUsageSink"]

_log = logging.getLogger(__name__)
RECORDS = Counter(
    "strata_gateway_usage_records_total",
    "Usage records by outcome: published, duplicate, spooled, replayed, invalid, lost.",
    ["outcome"],
)
_PUBLISHED = RECORDS.labels("published")
_DUPLICATE = RECORDS.labels("duplicate")
SPOOLED = Gauge("strata_gateway_usage_spooled_records", "Usage records waiting in the on-disk spool.")


class JetStreamUsageSink:
    """Usage records to JetStream, with an on-disk spool for when NATS is unreachable.

    Args:
        broker: the gateway's NATS connection (owned by the caller).
        spool_dir: the spool directory, one per gateway replica; must survive restarts (a volume
            in production, not /tmp).
        publish_timeout_s: the longest `record()` waits for a JetStream ack before spooling.
        replay_interval_s: how often the replay task looks for spooled records.
        replay_concurrency: publishes in flight at once during replay.
    """

    def __init__(
        self,
        broker: Broker,
        spool_dir: Path | str,
        *,
        publish_timeout_s: float = 1.0,
        replay_interval_s: float = 1.0,
        replay_concurrency: int = 64,
    ) -> None:
        self._broker = broker
        self._spool = UsageSpool(Path(spool_dir))
        self._timeout = publish_timeout_s
        self._interval = replay_interval_s
        self._concurrency = replay_concurrency
        self._lock = asyncio.Lock()  # serializes spool appends, seals and removals
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._spooled = 0
        self._pipeline = JetStreamPipeline(broker.client, publish_timeout_s)

    @property
    def spooled(self) -> int:
        """Records spooled and not yet replayed (this process's count, plus what it found at start)."""
        return self._spooled

    async def start(self) -> None:
        """Count what a previous process left in the spool and start the replay task."""
        await self._pipeline.start()
        self._spooled = await asyncio.to_thread(self._spool.pending_records)
        SPOOLED.set(self._spooled)
        self._replayer = asyncio.create_task(self._replay_loop(), name="usage-replay")
        if self._spooled:
            _log.info("usage spool holds %d records from before; replaying when NATS answers", self._spooled)
            self._wake.set()

    async def close(self) -> None:
        """Stop replaying and close the spool; unreplayed records stay on disk for the next start."""
        if self._replayer is not None:
            self._replayer.cancel()
            await asyncio.gather(self._replayer, return_exceptions=True)
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._pipeline.close()
        async with self._lock:
            self._spool.close()

    async def record(self, usage: UsageRecord) -> None:
        """Publish `usage` (dedup id = its request id), or spool it. Never raises."""
        trace = inject_headers() if tracing_active() else {}
        await self.record_many((UsageEntry.of(usage, trace),))

    async def record_many(self, entries: Sequence[UsageEntry]) -> None:
        """Publish the entries in one write, their acks awaited together; spool those not acked. Never raises."""
        messages: list[tuple[str, bytes, Mapping[str, str]]] = []
        publishable: list[UsageEntry] = []
        for entry in entries:
            try:
                subject = subjects.usage(entry.tenant_id)
            except subjects.InvalidToken as exc:
                RECORDS.labels("invalid").inc()
                _log.error("usage record %s not publishable: %s", entry.request_id, exc)
                continue
            messages.append((subject, entry.payload, {**entry.trace, "Nats-Msg-Id": entry.request_id}))
            publishable.append(entry)
        if not publishable:
            return
        acks: list[asyncio.Future[PubAck]] = []
        if self._broker.connected:
            try:
                acks = await self._pipeline.send_many(messages)
            except Exception as exc:  # noqa: BLE001 - any failure means "spool them"
                _log.debug("usage publish failed, spooling %d records: %r", len(publishable), exc)
        unacked = []
        for entry, ack in itertools.zip_longest(publishable, acks):
            if ack is not None:
                try:
                    (_DUPLICATE if (await ack).duplicate else _PUBLISHED).inc()
                    continue
                except Exception as exc:  # noqa: BLE001 - any failure means "spool it"
                    _log.debug("usage publish failed, spooling %s: %r", entry.request_id, exc)
            unacked.append(entry)
        if unacked:
            await self._spool_records(unacked)

    async def replay_now(self) -> int:
        """Replay every spooled record now (if NATS is connected); returns how many were acked.

        Stops at the first failed publish; that segment stays and is replayed whole next time.
        """
        if not self._broker.connected:
            return 0
        async with self._lock:
            self._spool.seal()
            segments = self._spool.sealed()
        replayed = 0
        for segment in segments:
            lines = await asyncio.to_thread(self._spool.read, segment)
            records = []
            for line in lines:
                try:
                    records.append(UsageRecord.model_validate_json(line))
                except ValidationError:
                    RECORDS.labels("invalid").inc()
                    _log.error("unreadable line in usage spool %s skipped", segment.name)
            for start in range(0, len(records), self._concurrency):
                chunk = records[start : start + self._concurrency]
                results = await asyncio.gather(*(self._publish(r) for r in chunk), return_exceptions=True)
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    if any(isinstance(r, NoStreamResponseError) for r in failed):
                        await ensure_event_plane(self._broker)  # a NATS without our stream (fresh store)
                    raise failed[0]
            async with self._lock:
                self._spool.remove(segment)
            replayed += len(records)
            self._spooled = max(0, self._spooled - len(lines))
            SPOOLED.set(self._spooled)
            RECORDS.labels("replayed").inc(len(records))
        if replayed:
            _log.info("replayed %d spooled usage records", replayed)
        return replayed

    async def _publish(self, usage: UsageRecord) -> None:
        subject = subjects.usage(usage.tenant_id)
        headers = {"Nats-Msg-Id": usage.request_id}
        await self._pipeline.publish(subject, encode(usage), headers, max(self._timeout, 5.0))

    async def _spool_records(self, entries: Sequence[UsageEntry]) -> None:
        """Spool `entries` in the writer's next group commit; counts each as spooled or lost."""
        loop = asyncio.get_running_loop()
        futures = []
        for entry in entries:
            future: asyncio.Future[None] = loop.create_future()
            self._queue.append((entry.payload, future))
            futures.append(future)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_spool(), name="usage-spool-writer")
        for entry, future in zip(entries, futures, strict=True):
            try:
                await asyncio.shield(future)
            except OSError as exc:
                RECORDS.labels("lost").inc()
                _log.error("usage record %s LOST: spool write failed: %r", entry.request_id, exc)
                continue
            RECORDS.labels("spooled").inc()

    async def _write_spool(self) -> None:
        """Group commit: everything queued while one fsync runs goes into the next one."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    async with self._lock:
                        await asyncio.to_thread(self._spool.append, [line for line, _ in batch])
                except OSError as exc:
                    for _, future in batch:
                        future.set_exception(exc)
                    continue
                self._spooled += len(batch)
                SPOOLED.set(self._spooled)
                for _, future in batch:
                    future.set_result(None)
                self._wake.set()
        finally:
            self._writer = None

    async def _replay_loop(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            if not self._spooled or not self._broker.connected:
                continue
            try:
                await self.replay_now()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - retried on the next tick
                failures += 1
                if failures in (1, 10) or failures % 60 == 0:
                    _log.warning("usage spool replay failed (%d in a row): %r", failures, exc)
