"""The retry budget: retries in flight stay a bounded share of the requests in flight.

As Envoy's retry budgets: a retry may start while ``retries in flight < max(min_concurrency,
percent/100 × requests in flight)``. When the whole fleet fails, retries therefore add at
most that share of load instead of doubling it. Each request also has its own cap
(`max_retries`), enforced by the caller.
"""

from __future__ import annotations

__all__ = ["RetryBudget"]


class RetryBudget:
    """Counts retries in flight against the budget (one instance per gateway process).

    Args:
        percent: allowed retries in flight, as a percentage of requests in flight.
        min_concurrency: retries in flight always allowed.
    """

    def __init__(self, percent: float, min_concurrency: int) -> None:
        self._ratio = percent / 100.0
        self._min = min_concurrency
        self.active = 0

    def try_acquire(self, requests_in_flight: int) -> bool:
        """Start one retry if the budget allows; the caller must :meth:`release` it."""
        if self.active >= max(self._min, self._ratio * requests_in_flight):
            return False
        self.active += 1
        return True

    def release(self) -> None:
        """A retry acquired earlier has finished."""
        self.active = max(0, self.active - 1)
