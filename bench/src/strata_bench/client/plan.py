"""Plan files (JSONL of :class:`PlannedRequest` dicts) and a quick synthetic plan.

The synthetic plan is for smoke runs and self-checks only (random words, no tokenizer);
real datasets and arrival processes come from ``strata_bench.workloads``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import orjson

from strata_bench.model import PlannedRequest

__all__ = ["load_plan", "save_plan", "synthetic_plan", "warmup_from"]

_FIELDS = frozenset(f.name for f in dataclasses.fields(PlannedRequest))


def load_plan(path: str | Path) -> list[PlannedRequest]:
    """Read a plan file: one JSON object per line with :class:`PlannedRequest` fields.

    Raises:
        ValueError: a line has unknown fields or is not an object (the message names the line).
    """
    plan: list[PlannedRequest] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = orjson.loads(line)
            if not isinstance(obj, dict) or not obj.keys() <= _FIELDS:
                extra = sorted(set(obj) - _FIELDS) if isinstance(obj, dict) else type(obj).__name__
                raise ValueError(f"{path}:{lineno}: not a PlannedRequest ({extra})")
            plan.append(PlannedRequest(**obj))
    return plan


def save_plan(plan: Iterable[PlannedRequest], path: str | Path) -> None:
    """Write `plan` as JSONL (the format :func:`load_plan` reads)."""
    with open(path, "wb") as f:
        for p in plan:
            f.write(orjson.dumps(dataclasses.asdict(p)) + b"\n")


def synthetic_plan(
    n: int,
    *,
    rate: float | None = None,
    arrival: Literal["poisson", "constant"] = "poisson",
    prompt_words: int = 128,
    max_tokens: int = 32,
    seed: int = 0,
) -> list[PlannedRequest]:
    """`n` single-turn requests of `prompt_words` random words each.

    Args:
        rate: requests per second of the arrival times (None: all at 0, for closed loop).
        arrival: exponential (Poisson) or equal gaps.
    """
    if n < 0 or (rate is not None and rate <= 0):
        raise ValueError("synthetic_plan needs n >= 0 and rate > 0 (or None)")
    rng = random.Random(seed)
    t, plan = 0.0, []
    for i in range(n):
        words = " ".join(f"w{rng.randrange(10_000)}" for _ in range(max(0, prompt_words - 1)))
        plan.append(PlannedRequest(index=i, at_s=t, max_tokens=max_tokens, prompt=f"r{i} {words}"))
        if rate is not None:
            t += rng.expovariate(rate) if arrival == "poisson" else 1.0 / rate
    return plan


def warmup_from(plan: list[PlannedRequest], n: int) -> list[PlannedRequest]:
    """`n` warm-up copies of the plan's first single-turn requests (no session, sent at once).

    Note: they prime the server's prefix cache for those prompts.
    """
    firsts = [p for p in plan if p.turn == 0][:n]
    return [dataclasses.replace(p, session_id=None, at_s=0.0) for p in firsts]
