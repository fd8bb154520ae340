"""Seeded distributions for prompt lengths, output lengths and think times.

Every distribution draws a float with the caller's :class:`random.Random` (so a seed fixes
the whole workload) and clamps it to ``[minimum, maximum]``: :meth:`sample` rounds to a
token count, :meth:`sample_float` keeps the fraction (think times in seconds; build those
with ``minimum=0``). Means and standard deviations are those of the resulting
distribution, not of an underlying normal, so ``LogNormal(1000, 300)`` has mean ≈ 1000.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "Fixed",
    "LengthDistribution",
    "LogNormal",
    "Normal",
    "Pareto",
    "Uniform",
    "length_distribution",
    "sample_lengths",
]


class LengthDistribution(Protocol):
    """A seeded, clamped distribution of non-negative numbers."""

    def sample(self, rng: random.Random) -> int:
        """One value rounded to an integer, clamped."""
        ...

    def sample_float(self, rng: random.Random) -> float:
        """One value, clamped, not rounded."""
        ...


@dataclass(frozen=True, kw_only=True)
class _Clamped:
    minimum: float = 1
    maximum: float | None = None

    def draw(self, rng: random.Random) -> float:
        raise NotImplementedError

    def sample_float(self, rng: random.Random) -> float:
        """One value, clamped to ``[minimum, maximum]``, not rounded."""
        value = max(self.minimum, self.draw(rng))
        return value if self.maximum is None else min(self.maximum, value)

    def sample(self, rng: random.Random) -> int:
        """One value rounded to the nearest integer, clamped to ``[minimum, maximum]``."""
        value = max(math.ceil(self.minimum), round(self.draw(rng)))
        return value if self.maximum is None else min(math.floor(self.maximum), value)


@dataclass(frozen=True)
class Fixed(_Clamped):
    """Always `value`."""

    value: float

    def draw(self, rng: random.Random) -> float:
        """`value` (consumes no randomness)."""
        return self.value


@dataclass(frozen=True)
class Uniform(_Clamped):
    """Uniform on ``[low, high]``."""

    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        """A uniform draw."""
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class Normal(_Clamped):
    """Normal with `mean` and `std` (clamped, not renormalised)."""

    mean: float
    std: float

    def draw(self, rng: random.Random) -> float:
        """A normal draw."""
        return rng.gauss(self.mean, self.std)


@dataclass(frozen=True)
class LogNormal(_Clamped):
    """Log-normal with the given mean and standard deviation of the values themselves."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if self.mean <= 0 or self.std < 0:
            raise ValueError(f"LogNormal needs mean > 0 and std >= 0, got {self.mean}, {self.std}")

    def draw(self, rng: random.Random) -> float:
        """A log-normal draw."""
        sigma2 = math.log1p((self.std / self.mean) ** 2)
        return rng.lognormvariate(math.log(self.mean) - sigma2 / 2, math.sqrt(sigma2))


@dataclass(frozen=True)
class Pareto(_Clamped):
    """Pareto (type I) with a given mean and standard deviation.

    ``fit="moments"`` solves for them exactly: with r = std/mean, shape
    ``alpha = 1 + sqrt(1 + 1/r**2)`` (always > 2, so the variance is finite) and scale
    ``x_m = mean*(alpha-1)/alpha``. ``fit="aibrix"`` reproduces AIBrix's generator,
    ``alpha = 2 + 1/r**2``: same mean, but a much smaller spread when std < mean
    (100 ± 10 gives a standard deviation of about 1) and somewhat smaller above.
    """

    mean: float
    std: float
    fit: Literal["moments", "aibrix"] = "moments"

    def __post_init__(self) -> None:
        if self.mean <= 0 or self.std <= 0:
            raise ValueError(f"Pareto needs mean > 0 and std > 0, got {self.mean}, {self.std}")

    @property
    def alpha(self) -> float:
        """The shape parameter."""
        inv_r2 = (self.mean / self.std) ** 2
        return 2 + inv_r2 if self.fit == "aibrix" else 1 + math.sqrt(1 + inv_r2)

    def draw(self, rng: random.Random) -> float:
        """A Pareto draw (never below ``x_m``)."""
        alpha = self.alpha
        return self.mean * (alpha - 1) / alpha * rng.paretovariate(alpha)


def sample_lengths(dist: LengthDistribution, n: int, rng: random.Random) -> list[int]:
    """`n` integer samples of `dist`."""
    return [dist.sample(rng) for _ in range(n)]


_KINDS: dict[str, tuple[type[_Clamped], tuple[str, ...]]] = {
    "fixed": (Fixed, ("value",)),
    "uniform": (Uniform, ("low", "high")),
    "normal": (Normal, ("mean", "std")),
    "lognormal": (LogNormal, ("mean", "std")),
    "pareto": (Pareto, ("mean", "std")),  # optional "fit": "moments" | "aibrix"
}


def length_distribution(spec: int | float | Mapping[str, Any]) -> LengthDistribution:
    """Build a distribution from config: a number (fixed) or ``{"kind": ..., params}``.

    Example: ``{"kind": "lognormal", "mean": 1000, "std": 300, "maximum": 4096}``.

    Raises:
        ValueError: unknown kind, missing or unexpected parameter.
    """
    if isinstance(spec, int | float):
        return Fixed(float(spec))
    params = dict(spec)
    kind = str(params.pop("kind", ""))
    if kind not in _KINDS:
        raise ValueError(f"unknown length distribution kind {kind!r}; expected one of {sorted(_KINDS)}")
    cls, required = _KINDS[kind]
    missing = [name for name in required if name not in params]
    unexpected = sorted(set(params) - set(required) - {"minimum", "maximum", "fit"})
    if missing or unexpected:
        raise ValueError(f"{kind} distribution: missing {missing}, unexpected {unexpected}")
    dist: LengthDistribution = cls(**{k: v if k == "fit" else float(v) for k, v in params.items()})
    return dist
