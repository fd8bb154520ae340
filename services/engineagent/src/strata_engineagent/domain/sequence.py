"""The KV-event sequence state machine of one engine publisher (pure logic).

vLLM numbers its event batches 0, 1, 2, ... per publisher process and ships them over
ZMQ PUB/SUB, which drops silently (slow joiner, high-water mark). Consumers of the
republished stream must either see every batch of an engine in order, or be told to
forget that engine (an `AllBlocksCleared(resync=True)` batch) before seeing more.

    received seq s            state: next = the seq expected next (None: no contact)
    ───────────────────────────────────────────────────────────────────────────────
    next is None   first contact  new epoch, resync, replay [0, s) if s > 0, publish s
    s == next      in order       publish s
    s >  next      gap            replay [next, s); complete: publish them, then s
                                                    else: resync, publish what is left
    s <  next      restart        new epoch, resync, replay [0, s) if s > 0, publish s
    undecodable    lost batch     resync (after it), skip s

After a resync only a contiguous run of replayed batches that ends right before `s`
is published: an older batch behind a hole could re-add blocks the hole removed.
A batch that could not be published (NATS down beyond the retry deadline) leaves
the stream inexact, so the next batch starts with a resync too.

Each tracker is owned by one engine's relay task; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Plan", "Recovery", "ResyncReason", "SequenceTracker", "plan_recovery"]


class ResyncReason(StrEnum):
    """Why consumers are told to drop the engine's state."""

    FIRST_CONTACT = "first_contact"  # earlier blocks unknown (agent start, reconnect)
    RESTART = "restart"  # seq went backwards: a new engine process
    GAP = "gap"  # batches lost and not replayable
    UNDECODABLE = "undecodable"  # a batch arrived but could not be decoded
    PUBLISH_FAILED = "publish_failed"  # a batch could not be republished


@dataclass(frozen=True)
class Plan:
    """What to do on receiving a batch.

    Attributes:
        resync: publish AllBlocksCleared(resync=True) first, for this reason.
        replay_from: ask the replay socket for batches [replay_from, seq) first.
        restarted: the engine restarted; the tracker's epoch was advanced.
        gap: batches between the previous one and this one never arrived.
    """

    resync: ResyncReason | None = None
    replay_from: int | None = None
    restarted: bool = False
    gap: bool = False


@dataclass(frozen=True)
class Recovery:
    """The outcome of a replay: an optional resync, then the replayed seqs to publish in order."""

    resync: ResyncReason | None
    publish: list[int] = field(default_factory=list)


class SequenceTracker:
    """Expected-sequence state of one engine's KV-event publisher.

    Attributes:
        next_seq: the seq expected next; None before the first batch and after a lost contact.
        epoch: number of contacts so far (first, reconnect, restart); a new epoch starts
            a new id space for the batches' message ids, since seqs may repeat.
    """

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.epoch = 0
        self._dirty = False

    def on_batch(self, seq: int) -> Plan:
        """Plan for a decodable batch `seq`; call :meth:`advance` once it was handled."""
        if self.next_seq is None:
            self.epoch += 1
            plan = Plan(ResyncReason.FIRST_CONTACT, 0 if seq > 0 else None)
        elif seq == self.next_seq:
            plan = Plan()
        elif seq > self.next_seq:
            plan = Plan(replay_from=self.next_seq, gap=True)
        else:
            self.epoch += 1
            plan = Plan(ResyncReason.RESTART, 0 if seq > 0 else None, restarted=True)
        return self._with_pending_resync(plan)

    def on_undecodable(self, seq: int) -> Plan:
        """Plan for batch `seq` whose payload cannot be decoded: resync, then skip it."""
        restarted = self.next_seq is not None and seq < self.next_seq
        if restarted or self.next_seq is None:
            self.epoch += 1
        self._dirty = False
        self.next_seq = seq + 1
        return Plan(ResyncReason.UNDECODABLE, restarted=restarted)

    def advance(self, seq: int) -> None:
        """Record that batch `seq` was handled (published, or given up on)."""
        self.next_seq = seq + 1

    def publish_failed(self) -> None:
        """A batch (or resync) could not be published: resync before the next one."""
        self._dirty = True

    def lose_contact(self) -> None:
        """The connection to the publisher dropped: treat the next batch as a first contact.

        Whether the publisher restarted meanwhile is unknowable (its seq may have passed
        ours again), so the next batch starts a new epoch and a resync either way.
        """
        self.next_seq = None

    def _with_pending_resync(self, plan: Plan) -> Plan:
        if self._dirty and plan.resync is None:
            plan = Plan(ResyncReason.PUBLISH_FAILED, plan.replay_from, plan.restarted, plan.gap)
        self._dirty = False
        return plan


def plan_recovery(plan: Plan, seq: int, replayed: Collection[int]) -> Recovery:
    """Decide what to publish before batch `seq`, given the seqs a replay returned.

    Args:
        plan: the plan made for `seq` (its `replay_from` is where the replay started).
        seq: the batch that arrived over PUB/SUB.
        replayed: seqs the replay returned and that decoded (any order; extras ignored).
            Empty when no replay was possible (no endpoint, timeout).
    """
    if plan.replay_from is None:
        return Recovery(plan.resync)
    start = plan.replay_from
    available = replayed if isinstance(replayed, (set, frozenset)) else set(replayed)
    run: list[int] = []
    cursor = seq - 1
    while cursor >= start and cursor in available:
        run.append(cursor)
        cursor -= 1
    run.reverse()
    complete = cursor < start
    return Recovery(plan.resync if complete else plan.resync or ResyncReason.GAP, run)
