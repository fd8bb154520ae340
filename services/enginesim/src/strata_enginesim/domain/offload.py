"""The seam where a KV offload tier (the later `strata_kvcache` work) plugs into the simulator.

vLLM's offloading connectors do two things the simulator reproduces:

* **save on eviction**: when the GPU pool evicts a cached block, the tier may keep a copy
  (`save`);
* **load on miss**: when a new request's prefix continues past the GPU cache hit, the
  tier says how many further leading blocks it holds (`lookup`); the engine then counts
  them as cached tokens (like `external_kv_transfer`) and charges their bytes at the
  tier's bandwidth to the step that loads them.

Implementations must be cheap and non-blocking: both are called from the engine step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from strata_contracts.hashing import BlockHash

__all__ = ["OffloadTier"]


class OffloadTier(Protocol):
    """A lower KV tier the simulated engine can save to and load from."""

    def save(self, block_hash: BlockHash, nbytes: int) -> None:
        """Offer an evicted block (`nbytes` of KV) to the tier; it may keep or drop it."""

    def lookup(self, hashes: Sequence[BlockHash]) -> int:
        """How many of `hashes`, from the first on, the tier can load."""

    def load_seconds(self, nbytes: int) -> float:
        """Time to bring `nbytes` of KV into the engine (latency + bytes / bandwidth)."""
