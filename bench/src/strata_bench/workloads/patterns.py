"""Synthetic rate (or length) curves: one value per interval, usually per second.

Feed a rate curve to :func:`~strata_bench.workloads.arrivals.arrivals_for_rates` (or
:func:`~strata_bench.workloads.builders.plan_pattern`); a length curve to
:class:`~strata_bench.workloads.prompts.CurvePrompts`.

The sine curve is AIBrix's ``synthetic`` trace::

    value(i) = round(A * sin(ω i) + B + N(0, σ²)),   ω = 2π * period / num_intervals

(`period` = number of full cycles over the run); ``only_rise`` clamps to the running
maximum. Presets (B = 6 for traffic, 1024 for lengths, σ = 0.1):

    quick_rising       A = 0.5 B   5 cycles     only_rise
    slow_rising        A = 0.5 B   0.25 cycle   only_rise
    slight_fluctuation A = 0.1 B   1 cycle
    severe_fluctuation A = 0.5 B   12 cycles
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "SINE_PRESETS",
    "SinePattern",
    "exponential_ramp",
    "linear_ramp",
    "on_off",
    "sine_from_pattern_file",
    "sine_preset",
    "with_bursts",
]


@dataclass(frozen=True)
class SinePattern:
    """AIBrix's sine curve (see the module docstring).

    Attributes:
        mean: B, the centre value.
        amplitude: A.
        period: full cycles over the whole run.
        noise: σ of the additive normal noise (absolute, not relative to B).
        only_rise: never go below the running maximum.
        integer: round every value (AIBrix does).
        minimum: clamp below (0 for rates; use 1 for lengths).
    """

    mean: float
    amplitude: float
    period: float
    noise: float = 0.1
    only_rise: bool = False
    integer: bool = True
    minimum: float = 0.0

    def values(self, num_intervals: int, rng: random.Random) -> list[float]:
        """The curve over `num_intervals` intervals (noise drawn from `rng`)."""
        if num_intervals <= 0:
            return []
        omega = 2 * math.pi * self.period / num_intervals
        out: list[float] = []
        highest = -math.inf
        for i in range(num_intervals):
            value = self.amplitude * math.sin(omega * i) + self.mean + rng.gauss(0.0, self.noise)
            if self.integer:
                value = float(round(value))
            if self.only_rise:
                highest = max(highest, value)
                value = highest
            out.append(max(self.minimum, value))
        return out


@dataclass(frozen=True)
class _Preset:
    amplitude_ratio: float
    period: float
    only_rise: bool


SINE_PRESETS: Final[Mapping[str, _Preset]] = {
    "quick_rising": _Preset(0.5, 5, True),
    "slow_rising": _Preset(0.5, 0.25, True),
    "slight_fluctuation": _Preset(0.1, 1, False),
    "severe_fluctuation": _Preset(0.5, 12, False),
}


def sine_preset(name: str, *, mean: float = 6.0, noise: float = 0.1, minimum: float = 0.0) -> SinePattern:
    """An AIBrix preset around `mean` (6 QPS for traffic, 1024 tokens for lengths).

    Raises:
        ValueError: unknown preset name.
    """
    preset = SINE_PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown sine preset {name!r}; expected one of {sorted(SINE_PRESETS)}")
    return SinePattern(mean, preset.amplitude_ratio * mean, preset.period, noise, preset.only_rise, minimum=minimum)


def sine_from_pattern_file(config: Mapping[str, Any], duration_s: float, *, minimum: float = 0.0) -> SinePattern:
    """An AIBrix pattern file ``{"fluctuate", "mean", "noise", "period_len_ms", "only_rise"}``.

    The period becomes ``duration / period_len`` cycles over the run.

    Raises:
        KeyError: a key is missing.
    """
    return SinePattern(
        mean=float(config["mean"]),
        amplitude=float(config["fluctuate"]),
        period=duration_s * 1000.0 / float(config["period_len_ms"]),
        noise=float(config["noise"]),
        only_rise=bool(config.get("only_rise", False)),
        minimum=minimum,
    )


def linear_ramp(start: float, end: float, duration_s: float, *, step_s: float = 1.0) -> list[float]:
    """Values going linearly from `start` to `end`, one per step (midpoint of each step)."""
    steps = _steps(duration_s, step_s)
    return [start + (end - start) * (k + 0.5) / steps for k in range(steps)]


def exponential_ramp(start: float, end: float, duration_s: float, *, step_s: float = 1.0) -> list[float]:
    """Values growing geometrically from `start` to `end` (both > 0), one per step.

    Raises:
        ValueError: a non-positive endpoint.
    """
    if start <= 0 or end <= 0:
        raise ValueError(f"an exponential ramp needs positive endpoints, got {start}, {end}")
    steps = _steps(duration_s, step_s)
    return [start * (end / start) ** ((k + 0.5) / steps) for k in range(steps)]


def on_off(
    base: float, peak: float, *, on_s: float, off_s: float, duration_s: float, step_s: float = 1.0
) -> list[float]:
    """A square wave: `peak` for `on_s`, then `base` for `off_s`, repeated (starts on)."""
    cycle = on_s + off_s
    if on_s <= 0 or off_s < 0:
        raise ValueError(f"on_s must be > 0 and off_s >= 0, got {on_s}, {off_s}")
    return [peak if (k * step_s) % cycle < on_s else base for k in range(_steps(duration_s, step_s))]


def with_bursts(values: list[float], bursts: list[tuple[float, float, float]], *, step_s: float = 1.0) -> list[float]:
    """A copy of `values` with bursts ``(start_s, length_s, value)`` overriding their steps."""
    out = list(values)
    for start_s, length_s, value in bursts:
        first = max(0, int(start_s / step_s))
        last = min(len(out), math.ceil((start_s + length_s) / step_s))
        if first < last:
            out[first:last] = [value] * (last - first)
    return out


def _steps(duration_s: float, step_s: float) -> int:
    if duration_s <= 0 or step_s <= 0:
        raise ValueError(f"duration_s and step_s must be > 0, got {duration_s}, {step_s}")
    return math.ceil(duration_s / step_s - 1e-9)
