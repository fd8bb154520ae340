"""Arrival processes: when each request of an open-loop plan is sent.

All schedules are precomputed absolute times (seconds from the run start), which is what
the client sleeps towards: relative sleeps drift (vLLM sent 183.5 req/s when asked 200).

A renewal process is described by its gap distribution at unit rate (mean gap 1)::

    poisson    Exp(1)                           CV 1
    gamma      Gamma(shape=b, scale=1/b)        CV 1/sqrt(b)  (b = burstiness, as vLLM/AIPerf)
    constant   1                                CV 0          (gamma with b -> inf)
    uniform    U(0, 2)                          CV 1/sqrt(3)

and divided by the rate. Time-varying rates (:func:`arrivals_for_rates`) run the same
unit-rate process in *operational time* ``Λ(t) = ∫ rate`` and map it back, so a rate curve
composes with any burstiness (Poisson gives the non-homogeneous Poisson process).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["ArrivalKind", "ArrivalProcess", "absolute_schedule", "arrivals_for_rates"]

ArrivalKind = Literal["poisson", "gamma", "constant", "uniform"]


@dataclass(frozen=True)
class ArrivalProcess:
    """A constant-rate renewal process.

    Attributes:
        rate: mean requests per second.
        kind: gap distribution (see the module docstring).
        burstiness: gamma shape; < 1 burstier than Poisson, > 1 smoother (``gamma`` only).
    """

    rate: float
    kind: ArrivalKind = "poisson"
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"arrival rate must be > 0, got {self.rate}")
        if self.burstiness <= 0:
            raise ValueError(f"burstiness must be > 0, got {self.burstiness}")
        if self.kind not in ("poisson", "gamma", "constant", "uniform"):
            raise ValueError(f"unknown arrival kind {self.kind!r}")

    def unit_gap(self, rng: random.Random) -> float:
        """One gap of the process at rate 1 (mean 1)."""
        if self.kind == "poisson":
            return rng.expovariate(1.0)
        if self.kind == "gamma":
            return rng.gammavariate(self.burstiness, 1.0 / self.burstiness)
        if self.kind == "uniform":
            return rng.uniform(0.0, 2.0)
        return 1.0

    def gaps(self, n: int, rng: random.Random) -> list[float]:
        """`n` inter-arrival gaps in seconds."""
        return [self.unit_gap(rng) / self.rate for _ in range(n)]

    def times(
        self,
        rng: random.Random,
        *,
        n: int | None = None,
        duration_s: float | None = None,
        start_s: float = 0.0,
        rescale: bool = False,
    ) -> list[float]:
        """Absolute arrival times; the first comes one gap after `start_s` (as in vLLM).

        Args:
            rng: the random source (seed it for a reproducible plan).
            n: number of arrivals.
            duration_s: keep arrivals before ``start_s + duration_s``.
            start_s: time origin.
            rescale: with `n`, stretch the schedule so the last arrival is at exactly
                ``start_s + n / rate`` (vLLM's fixed-rate normalisation: the achieved
                mean rate is then exact, burstiness is kept).

        Raises:
            ValueError: neither `n` nor `duration_s` given, or `rescale` without `n`.
        """
        if n is None and duration_s is None:
            raise ValueError("give the number of arrivals, a duration, or both")
        if rescale and n is None:
            raise ValueError("rescale needs n")
        end = None if duration_s is None else start_s + duration_s
        out: list[float] = []
        offset = 0.0
        while n is None or len(out) < n:
            offset += self.unit_gap(rng) / self.rate
            if end is not None and start_s + offset >= end:
                break
            out.append(offset)
        if rescale and out and out[-1] > 0:
            factor = len(out) / self.rate / out[-1]
            out = [t * factor for t in out]
        return [start_s + t for t in out]


def arrivals_for_rates(
    rates: Sequence[float],
    rng: random.Random,
    *,
    step_s: float = 1.0,
    kind: ArrivalKind = "poisson",
    burstiness: float = 1.0,
    start_s: float = 0.0,
) -> list[float]:
    """Arrival times for a piecewise-constant rate curve (one rate per `step_s`).

    The expected number of arrivals in step k is ``rates[k] * step_s``; steps at rate 0
    get none. The run covers ``len(rates) * step_s`` seconds from `start_s`.

    Raises:
        ValueError: a negative rate or a non-positive step.
    """
    if step_s <= 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    unit = ArrivalProcess(1.0, kind, burstiness)
    times: list[float] = []
    next_event = unit.unit_gap(rng)
    done = 0.0  # operational time (expected arrivals) at the start of step k
    for k, rate in enumerate(rates):
        if rate < 0:
            raise ValueError(f"rate {rate} at step {k} is negative")
        mass = rate * step_s
        while next_event < done + mass:
            times.append(start_s + k * step_s + (next_event - done) / rate)
            next_event += unit.unit_gap(rng)
        done += mass
    return times


def absolute_schedule(times_s: Iterable[float], *, time_scale: float = 1.0, rebase: bool = False) -> list[float]:
    """A given schedule (e.g. a trace's timestamps), checked, optionally shifted and scaled.

    Args:
        times_s: arrival times in seconds, non-decreasing.
        time_scale: multiply every time (0.5 = twice as fast).
        rebase: shift so the first arrival is at 0.

    Raises:
        ValueError: times go backwards, are negative, or the scale is not positive.
    """
    if time_scale <= 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    values = list(times_s)
    origin = values[0] if rebase and values else 0.0
    out: list[float] = []
    for i, t in enumerate(values):
        if i and t < values[i - 1]:
            raise ValueError(f"schedule goes backwards at position {i}: {values[i - 1]} then {t}")
        shifted = (t - origin) * time_scale
        if shifted < 0:
            raise ValueError(f"negative time {shifted} at position {i}")
        out.append(shifted)
    return out
