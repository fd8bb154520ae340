"""In-process engine pickers: the gateway's own choice when the router cannot make one.

Used when no router answers within `route_timeout_ms` (or none exists yet). Only the
strategies that need nothing but the gateway's own state are implemented here; any
other requested strategy falls back to `least-request`, as DESIGN.md prescribes.

* ``random``: uniform among the candidates.
* ``least-request``: fewest requests this gateway has in flight on the engine (AIBrix's
  gateway-local counter); ties go to the engine reporting fewer waiting, then fewer
  running requests (fresh load snapshots only), then to a random one of the tied.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final, Protocol

from strata_gateway.domain.fleet import EngineView

__all__ = ["FALLBACK_STRATEGY", "LeastRequestPicker", "Picker", "RandomPicker", "local_picker"]

FALLBACK_STRATEGY: Final = "least-request"


class Picker(Protocol):
    """Chooses one engine among non-empty candidates; never does I/O, never raises."""

    name: str

    def pick(self, candidates: Sequence[EngineView]) -> EngineView:
        """The chosen engine (`candidates` is not empty)."""
        ...


class RandomPicker:
    """Uniform random choice."""

    name = "random"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[EngineView]) -> EngineView:
        """A uniformly random candidate."""
        return self._rng.choice(candidates)


class LeastRequestPicker:
    """Fewest gateway in-flight requests; ties by engine waiting, then running, then random."""

    name = FALLBACK_STRATEGY

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[EngineView]) -> EngineView:
        """The least-loaded candidate."""
        best = min((e.in_flight, e.waiting, e.running) for e in candidates)
        tied = [e for e in candidates if (e.in_flight, e.waiting, e.running) == best]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)


def local_picker(strategy: str, pickers: dict[str, Picker]) -> Picker:
    """The picker for `strategy`, or least-request when the gateway has none of that name."""
    return pickers.get(strategy) or pickers[FALLBACK_STRATEGY]
