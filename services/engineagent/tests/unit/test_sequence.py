"""The KV-event sequence state machine, table-driven."""

from __future__ import annotations

import pytest

from strata_engineagent.domain.sequence import Plan, Recovery, ResyncReason, SequenceTracker, plan_recovery

R = ResyncReason
FIRST, RESTART, GAP, BAD, PUB = R.FIRST_CONTACT, R.RESTART, R.GAP, R.UNDECODABLE, R.PUBLISH_FAILED


# Each step: ("batch", seq) | ("bad", seq) | ("drop",) | ("fail",); expected plan for batch/bad steps.
SCENARIOS = {
    "in order from zero": (
        [("batch", 0), ("batch", 1), ("batch", 2)],
        [Plan(FIRST), Plan(), Plan()],
    ),
    "late join replays from zero": (
        [("batch", 4), ("batch", 5)],
        [Plan(FIRST, replay_from=0), Plan()],
    ),
    "gap asks for the missing range": (
        [("batch", 0), ("batch", 1), ("batch", 5), ("batch", 6)],
        [Plan(FIRST), Plan(), Plan(replay_from=2, gap=True), Plan()],
    ),
    "backwards seq is a restart": (
        [("batch", 0), ("batch", 1), ("batch", 2), ("batch", 0), ("batch", 1)],
        [Plan(FIRST), Plan(), Plan(), Plan(RESTART, restarted=True), Plan()],
    ),
    "restart seen late replays the new incarnation from zero": (
        [("batch", 7), ("batch", 8), ("batch", 3)],
        [Plan(FIRST, replay_from=0), Plan(), Plan(RESTART, replay_from=0, restarted=True)],
    ),
    "repeated seq is a restart": (
        [("batch", 3), ("batch", 3)],
        [Plan(FIRST, replay_from=0), Plan(RESTART, replay_from=0, restarted=True)],
    ),
    "undecodable batch resyncs and is skipped": (
        [("batch", 0), ("bad", 1), ("batch", 2)],
        [Plan(FIRST), Plan(BAD), Plan()],
    ),
    "undecodable batch after a restart": (
        [("batch", 5), ("bad", 0), ("batch", 1)],
        [Plan(FIRST, replay_from=0), Plan(BAD, restarted=True), Plan()],
    ),
    "failed publish resyncs on the next batch": (
        [("batch", 0), ("fail",), ("batch", 1), ("batch", 2)],
        [Plan(FIRST), Plan(PUB), Plan()],
    ),
    "failed publish and a gap": (
        [("batch", 0), ("fail",), ("batch", 3)],
        [Plan(FIRST), Plan(PUB, replay_from=1, gap=True)],
    ),
    "failed publish does not hide a restart reason": (
        [("batch", 4), ("fail",), ("batch", 0)],
        [Plan(FIRST, replay_from=0), Plan(RESTART, restarted=True)],
    ),
    "lost connection makes the next batch a first contact": (
        [("batch", 0), ("batch", 1), ("drop",), ("batch", 2)],
        [Plan(FIRST), Plan(), Plan(FIRST, replay_from=0)],
    ),
}


@pytest.mark.parametrize(("steps", "expected"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_plans(steps: list[tuple[str, ...]], expected: list[Plan]) -> None:
    tracker = SequenceTracker()
    plans = []
    for kind, *args in steps:
        if kind == "batch":
            plans.append(tracker.on_batch(int(args[0])))
            tracker.advance(int(args[0]))
        elif kind == "bad":
            plans.append(tracker.on_undecodable(int(args[0])))
        elif kind == "fail":
            tracker.publish_failed()
        else:
            tracker.lose_contact()

    assert plans == expected


def test_epoch_counts_contacts() -> None:
    tracker = SequenceTracker()
    epochs = []
    for seq in (0, 1, 0, 1, None, 2, 3):
        if seq is None:
            tracker.lose_contact()
            continue
        tracker.on_batch(seq)
        tracker.advance(seq)
        epochs.append(tracker.epoch)

    assert epochs == [1, 1, 2, 2, 3, 3]
    assert tracker.next_seq == 4


RECOVERIES = {
    "nothing to replay": (Plan(), 5, [], Recovery(None)),
    "first contact at zero": (Plan(FIRST), 0, [], Recovery(FIRST)),
    "complete gap replay": (Plan(replay_from=2, gap=True), 5, [2, 3, 4], Recovery(None, [2, 3, 4])),
    "extras and duplicates ignored": (Plan(replay_from=2, gap=True), 5, [4, 2, 3, 5, 6, 1], Recovery(None, [2, 3, 4])),
    "no replay possible": (Plan(replay_from=2, gap=True), 5, [], Recovery(GAP)),
    "start no longer buffered": (Plan(replay_from=2, gap=True), 6, [4, 5], Recovery(GAP, [4, 5])),
    "hole keeps only the run before seq": (Plan(replay_from=2, gap=True), 7, [2, 3, 5, 6], Recovery(GAP, [5, 6])),
    "hole right before seq publishes nothing": (Plan(replay_from=2, gap=True), 6, [2, 3, 4], Recovery(GAP)),
    "first contact, full history": (Plan(FIRST, replay_from=0), 3, [0, 1, 2], Recovery(FIRST, [0, 1, 2])),
    "first contact, partial history, one resync": (Plan(FIRST, replay_from=0), 5, [3, 4], Recovery(FIRST, [3, 4])),
    "restart, nothing replayable": (Plan(RESTART, replay_from=0, restarted=True), 4, [], Recovery(RESTART)),
    "pending publish failure, complete gap": (Plan(PUB, replay_from=1, gap=True), 3, [1, 2], Recovery(PUB, [1, 2])),
}


@pytest.mark.parametrize(("plan", "seq", "replayed", "expected"), RECOVERIES.values(), ids=RECOVERIES.keys())
def test_recovery(plan: Plan, seq: int, replayed: list[int], expected: Recovery) -> None:
    assert plan_recovery(plan, seq, replayed) == expected
