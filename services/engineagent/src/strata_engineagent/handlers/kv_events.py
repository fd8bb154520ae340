"""Relay of one engine's KV events: ZMQ in, JetStream `strata.kv.v1.events.<engine>` out.

Per received batch: decode, ask the sequence tracker what to do, replay what is
missing, then publish (resync marker, replayed batches, the batch) in that order.
Publishes are idempotent: `Nats-Msg-Id = <engine>:<epoch>:<seq>`, where the epoch
is `<agent start ms>.<contacts with the publisher>`, so a retried publish is stored
once and a new agent process or engine incarnation (whose seqs restart) never
collides with an old one inside JetStream's duplicate window.
"""

from __future__ import annotations

import asyncio
import logging
import time

import nats.errors
from pydantic import ValidationError

from strata_contracts import subjects
from strata_contracts.messages import AllBlocksCleared, KvEventBatch
from strata_contracts.vllm_kv_events import decode_batch, to_contract
from strata_engineagent.adapters.zmq_kv import DISCONNECTED, KvReplaySource, KvSource, MalformedMessage, RawBatch
from strata_engineagent.domain.sequence import Plan, ResyncReason, SequenceTracker, plan_recovery
from strata_engineagent.telemetry import KV_BATCHES, KV_EVENTS, KV_GAPS, KV_REPLAYS, KV_RESYNCS
from strata_runtime import Broker, InFlight

__all__ = ["KvRelay"]

_log = logging.getLogger(__name__)
_PUBLISH_ERRORS = (nats.errors.Error, TimeoutError, OSError)


class KvRelay:
    """Republishes one engine's KV-event batches in order; its :meth:`run` is one task.

    Args:
        engine_id: the engine.
        broker: the app's NATS broker (JetStream publishes).
        source: the engine's KV-event stream.
        replay: the engine's replay socket, None when it has none.
        inflight: the service's in-flight counter (a batch being handled is work in progress).
        publish_timeout: how long one publish is retried before the batch counts as lost.
        run_id: this agent process's id in message ids (its start time in ms).
    """

    def __init__(
        self,
        engine_id: str,
        broker: Broker,
        source: KvSource,
        replay: KvReplaySource | None,
        *,
        inflight: InFlight,
        publish_timeout: float,
        run_id: str,
    ) -> None:
        self.engine_id = engine_id
        self.tracker = SequenceTracker()
        self._broker = broker
        self._source = source
        self._replay = replay
        self._inflight = inflight
        self._publish_timeout = publish_timeout
        self._run_id = run_id
        self._subject = subjects.kv_events(engine_id)
        self._resyncs = 0

    async def run(self) -> None:
        """Relay until cancelled."""
        while True:
            try:
                item = await self._source.receive()
            except MalformedMessage as exc:
                KV_BATCHES.labels(self.engine_id, "invalid").inc()
                _log.warning("malformed kv event message from %s: %s", self.engine_id, exc)
                continue
            if item is DISCONNECTED:
                _log.info("kv event publisher of %s disconnected", self.engine_id)
                self.tracker.lose_contact()
                continue
            with self._inflight.track():
                try:
                    await self.handle(item)
                except Exception:  # noqa: BLE001 - a bug must not end the relay; what it lost forces a resync
                    _log.exception("kv batch %d of %s failed", item.seq, self.engine_id)
                    self.tracker.lose_contact()

    async def handle(self, raw: RawBatch) -> None:
        """Handle one received batch (see the state table in `domain.sequence`)."""
        batch = self._convert(raw)
        if batch is None:
            plan = self.tracker.on_undecodable(raw.seq)
            if plan.resync and not await self._publish_resync(plan.resync, raw.seq, time.time(), None):
                self.tracker.publish_failed()
            return
        plan = self.tracker.on_batch(raw.seq)
        if plan.gap:
            KV_GAPS.labels(self.engine_id).inc()
        replayed = await self._replayed(plan, raw.seq)
        recovery = plan_recovery(plan, raw.seq, replayed.keys())
        if plan.replay_from is not None:
            complete = len(recovery.publish) == raw.seq - plan.replay_from
            KV_REPLAYS.labels(self.engine_id, "complete" if complete else "incomplete").inc()
        published = [replayed[seq] for seq in recovery.publish]
        await self._publish_all(recovery.resync, published, batch)
        self.tracker.advance(raw.seq)

    async def _publish_all(
        self, resync: ResyncReason | None, replayed: list[KvEventBatch], batch: KvEventBatch
    ) -> None:
        first = replayed[0] if replayed else batch
        ok = resync is None or await self._publish_resync(resync, first.seq, batch.ts, batch.dp_rank)
        for item in [*replayed, batch]:
            ok = ok and await self._publish(item, "replayed" if item is not batch else "published")
        if not ok:
            self.tracker.publish_failed()

    async def _replayed(self, plan: Plan, seq: int) -> dict[int, KvEventBatch]:
        if plan.replay_from is None or self._replay is None:
            return {}
        raws = await self._replay.replay(plan.replay_from, seq)
        return {batch.seq: batch for raw in raws if (batch := self._convert(raw)) is not None}

    def _convert(self, raw: RawBatch) -> KvEventBatch | None:
        try:
            return to_contract(decode_batch(raw.payload), self.engine_id, raw.seq)
        except (ValueError, ValidationError) as exc:  # ValidationError is a ValueError; named for the reader
            KV_BATCHES.labels(self.engine_id, "invalid").inc()
            _log.warning("undecodable kv batch %d from %s: %s", raw.seq, self.engine_id, exc)
            return None

    async def _publish_resync(self, reason: ResyncReason, seq: int, ts: float, dp_rank: int | None) -> bool:
        self._resyncs += 1
        marker = KvEventBatch(
            engine_id=self.engine_id, seq=seq, ts=ts, dp_rank=dp_rank, events=[AllBlocksCleared(resync=True)]
        )
        _log.info("kv resync of %s", self.engine_id, extra={"reason": reason.value, "seq": seq})
        KV_RESYNCS.labels(self.engine_id, reason.value).inc()
        return await self._send(marker, f"{self._id_prefix}:{seq}:resync{self._resyncs}")

    async def _publish(self, batch: KvEventBatch, outcome: str) -> bool:
        if not await self._send(batch, f"{self._id_prefix}:{batch.seq}"):
            return False
        KV_BATCHES.labels(self.engine_id, outcome).inc()
        KV_EVENTS.labels(self.engine_id).inc(len(batch.events))
        return True

    @property
    def _id_prefix(self) -> str:
        return f"{self.engine_id}:{self._run_id}.{self.tracker.epoch}"

    async def _send(self, message: KvEventBatch, msg_id: str) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        delay = 0.05
        while True:
            try:
                await self._broker.publish_js(self._subject, message, msg_id=msg_id)
                return True
            except _PUBLISH_ERRORS as exc:
                if loop.time() + delay > deadline:
                    KV_BATCHES.labels(self.engine_id, "publish_failed").inc()
                    _log.error("cannot publish kv batch %s: %r", msg_id, exc)
                    return False
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.5)
