"""Multi-turn session plans: turn order, think times and a cap on concurrent sessions.

A session's turns are chat requests sharing ``session_id`` with ``turn`` = 0, 1, ...;
each carries only its new user message (the client prepends the history it has seen,
with the real answers). The client enforces the order: turn k is sent after turn k-1's
answer has arrived **and** ``think_time_s`` has passed, and not before its ``at_s``.

``at_s`` of later turns is therefore a lower bound estimated here as
``previous at_s + est_turn_s + think_time_s`` (`est_turn_s` = an assumed service time per
turn, 0 by default). The concurrent-session cap is applied to the same estimate: a
session starts no earlier than its arrival and the estimated end of the session whose
slot it takes. The client must still enforce the cap (its real turn times are unknown
here); pass it the same ``max_concurrent_sessions``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

from strata_bench.datasets.jsonl import SessionEntry
from strata_bench.model import PlannedRequest
from strata_bench.tokenizer import BenchTokenizer
from strata_bench.workloads.arrivals import ArrivalProcess
from strata_bench.workloads.lengths import LengthDistribution

__all__ = ["plan_sessions"]


def plan_sessions(
    sessions: Sequence[SessionEntry],
    *,
    tokenizer: BenchTokenizer | None = None,
    session_arrivals: ArrivalProcess | None = None,
    max_concurrent_sessions: int | None = None,
    think_time_s: LengthDistribution | None = None,
    output_lengths: LengthDistribution | None = None,
    default_max_tokens: int = 128,
    est_turn_s: float = 0.0,
    seed: int = 0,
    headers: Mapping[str, str] | None = None,
) -> list[PlannedRequest]:
    """Plan every turn of `sessions` (see the module docstring for timing).

    Args:
        sessions: the conversations (e.g. from ShareGPT or ``generate_multiturn``).
        tokenizer: counts reference completions to set output lengths.
        session_arrivals: when sessions start; None starts them all at 0 (closed loop).
        max_concurrent_sessions: cap on sessions in flight (estimated here, enforced by
            the client).
        think_time_s: pause before each later turn; None uses the session's own
            ``think_times_s``, else 0.
        output_lengths: override for every turn's output length; else the reference
            completion's token count (with `tokenizer`), else `default_max_tokens`.
        default_max_tokens: output length when nothing else says.
        est_turn_s: assumed seconds from sending a turn to its answer.
        seed: seeds session arrivals, think times and output lengths.
        headers: extra HTTP headers for every request.

    Raises:
        ValueError: a cap below 1 or a negative turn estimate.
    """
    if max_concurrent_sessions is not None and max_concurrent_sessions < 1:
        raise ValueError(f"max_concurrent_sessions must be >= 1, got {max_concurrent_sessions}")
    if est_turn_s < 0:
        raise ValueError(f"est_turn_s must be >= 0, got {est_turn_s}")
    starts = (
        session_arrivals.times(random.Random(f"{seed}:sessions"), n=len(sessions))
        if session_arrivals is not None
        else [0.0] * len(sessions)
    )
    rng = random.Random(f"{seed}:turns")
    slots: list[float] = []  # estimated end times of the sessions holding a slot
    plan: list[PlannedRequest] = []
    for session, arrival in zip(sessions, starts, strict=True):
        at_s = arrival
        if max_concurrent_sessions is not None and len(slots) >= max_concurrent_sessions:
            at_s = max(at_s, heapq.heappop(slots))
        for turn, text in enumerate(session.prompts):
            think = 0.0
            if turn > 0:
                if think_time_s is not None:
                    think = think_time_s.sample_float(rng)
                elif session.think_times_s is not None:
                    think = session.think_times_s[turn]
                at_s += est_turn_s + think
            plan.append(
                PlannedRequest(
                    index=0,
                    at_s=at_s,
                    max_tokens=_max_tokens(
                        session,
                        turn,
                        tokenizer=tokenizer,
                        output_lengths=output_lengths,
                        default=default_max_tokens,
                        rng=rng,
                    ),
                    messages=[{"role": "user", "content": text}],
                    session_id=str(session.session_id),
                    turn=turn,
                    think_time_s=think,
                    headers=dict(headers or {}),
                )
            )
        if max_concurrent_sessions is not None:
            heapq.heappush(slots, at_s + est_turn_s)
    plan.sort(key=lambda r: r.at_s)  # stable: turns of one session keep their order
    return [replace(r, index=i) for i, r in enumerate(plan)]


def _max_tokens(
    session: SessionEntry,
    turn: int,
    *,
    tokenizer: BenchTokenizer | None,
    output_lengths: LengthDistribution | None,
    default: int,
    rng: random.Random,
) -> int:
    if output_lengths is not None:
        return output_lengths.sample(rng)
    if session.completions and session.completions[turn] and tokenizer is not None:
        return max(1, len(tokenizer.encode(session.completions[turn])))
    return default
