"""Distribution summaries: mean, population std, min/max and linear-interpolated percentiles.

Percentiles follow numpy's default (``method="linear"``), the convention of vLLM bench::

    sorted values v[0..n-1];  position = (n - 1) * q / 100;  lo = floor(position)
    p_q = v[lo] + (v[lo + 1] - v[lo]) * (position - lo)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Final

__all__ = ["PERCENTILES", "Distribution", "describe", "percentile"]

PERCENTILES: Final = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) of already sorted, non-empty values (linear interpolation)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], not {q}")
    position = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(position)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (position - lo)


@dataclass(frozen=True)
class Distribution:
    """Summary of one metric over a set of samples (units are the caller's, ms in summaries)."""

    count: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    def to_dict(self) -> dict[str, float]:
        """Plain JSON-ready mapping."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> Distribution:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: (int(v) if k == "count" else float(v)) for k, v in data.items()})  # type: ignore[arg-type]


def describe(values: Iterable[float], scale: float = 1.0) -> Distribution | None:
    """Summarise `values` multiplied by `scale` (e.g. 1000 for s → ms); None when empty.

    ``std`` is the population standard deviation (numpy's default ``ddof=0``).
    """
    data = sorted(v * scale for v in values)
    if not data:
        return None
    n = len(data)
    mean = math.fsum(data) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / n)
    p50, p90, p95, p99 = (percentile(data, q) for q in PERCENTILES)
    return Distribution(n, mean, std, data[0], p50, p90, p95, p99, data[-1])
