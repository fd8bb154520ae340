"""What happens after a response: usage records and route outcomes, sent in batches.

    request over ─▶ admission settled + released (at once: the limits see it now)
                ─▶ Accounting.submit(exchange) ─▶ queue
    flusher: first exchange queued ─▶ linger `linger_s` ─▶ take the whole queue ─▶ one batch task:
             RouteOutcomes of the exchanges that reached an engine (core NATS, fire and forget)
             UsageSink.record_many(entries)   one JetStream publish each, acks awaited together,
                                              the unacked spooled
             (both queue frames on the NATS connection, which sends them in one write)

Both go out in wire form built straight from the exchange (no model per request), each
with the trace context of its own request.

Batching lets one socket write to NATS carry many records and replaces a task per request
with one per batch; a record waits at most `linger_s` plus one ack round trip, which no
client sees. Batches run concurrently (a slow ack never holds the next batch back).
:meth:`Accounting.close` flushes what is queued and waits for every batch (shutdown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from strata_gateway.domain.exchange import Exchange
from strata_gateway.domain.ports import UsageSink

__all__ = ["Accounting", "PublishOutcomes"]

_log = logging.getLogger(__name__)
PublishOutcomes = Callable[[Sequence[tuple[bytes, Mapping[str, str]]]], Awaitable[None]]
"""Publishes RouteOutcomes (JSON), each with its request's trace-context headers."""


class Accounting:
    """Batches the records of finished requests (one per gateway process).

    Args:
        sink: where usage records go.
        publish_outcomes: publishes encoded RouteOutcomes (errors are logged and dropped).
        linger_s: how long the first queued exchange waits for others to join its batch.
    """

    def __init__(self, sink: UsageSink, publish_outcomes: PublishOutcomes, linger_s: float = 0.005) -> None:
        self._sink = sink
        self._publish = publish_outcomes
        self._linger_s = linger_s
        self._queue: list[Exchange] = []
        self._flusher: asyncio.TimerHandle | None = None
        self._batches: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Exchanges queued or in a batch that has not finished."""
        return len(self._queue) + len(self._batches)

    def submit(self, exchange: Exchange) -> None:
        """Queue the records of an admitted request that is over (its admission already released)."""
        self._queue.append(exchange)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(self._linger_s, self._flush)

    async def close(self) -> None:
        """Send what is queued now and wait for every batch."""
        if self._flusher is not None:
            self._flusher.cancel()
        self._flush()
        while self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)

    def _flush(self) -> None:
        self._flusher = None
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch), name="usage-batch")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _send(self, batch: list[Exchange]) -> None:
        # Outcomes first: both publishes only queue frames until this task first waits (for
        # the usage acks), so the connection's flusher sends the two in one write.
        outcomes = []
        for exchange in batch:
            try:
                outcome = exchange.outcome_payload()
            except Exception:  # noqa: BLE001 - a bug in one outcome must not cost the others theirs
                _log.exception("route outcome not built", extra={"request_id": exchange.request_id})
                continue
            if outcome is not None:
                outcomes.append((outcome, exchange.trace_headers))
        if outcomes:
            try:
                await self._publish(outcomes)
            except Exception as exc:  # noqa: BLE001 - fire and forget: the router can do without these outcomes
                _log.debug("route outcomes not published: %r", exc)
        entries = []
        for exchange in batch:
            try:
                entries.append(exchange.usage_entry())
            except Exception:  # noqa: BLE001 - as for outcomes
                _log.exception("usage record not built", extra={"request_id": exchange.request_id})
        try:
            await self._sink.record_many(entries)
        except Exception:  # noqa: BLE001 - the sink must not raise; if it does, say so and go on
            _log.exception("usage sink failed", extra={"requests": [e.request_id for e in entries]})
