"""Per-request KV bookkeeping over a :class:`BlockPool` (vLLM v1's KVCacheManager, one group).

A request's block table covers its computed tokens plus those scheduled this step::

    tokens:  |<- cached prefix ->|<- computed ->|<- scheduled ->|
    blocks:  [hit][hit][hit]      [own][own]     [new][new]
             touched at first     allocated earlier  allocate_slots()

Only full blocks are hashed and cached; a prompt whose every block hits still
recomputes its last token (vLLM caps a hit at `num_tokens - 1`), so the cap rounds
down to a block boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from strata_contracts.hashing import BlockHash, VllmBlockHasher
from strata_enginesim.domain.blocks import Block, BlockPool
from strata_enginesim.domain.offload import OffloadTier

__all__ = ["KvManager", "SeqState"]


@dataclass
class SeqState:
    """The KV-relevant part of a request: its tokens, hashes and block table."""

    request_id: str
    token_ids: list[int]
    cache_salt: str | None = None
    blocks: list[Block] = field(default_factory=list)
    hashes: list[BlockHash] = field(default_factory=list)
    num_cached_blocks: int = 0  # leading blocks registered in the prefix cache


class KvManager:
    """Finds prefix hits, allocates slots, caches full blocks, frees requests.

    Args:
        pool: the block pool (owned by this manager).
        hasher: vLLM-compatible block hasher (same block size as the pool).
        offload: a lower tier consulted after the GPU prefix cache, if any.
    """

    def __init__(self, pool: BlockPool, hasher: VllmBlockHasher, offload: OffloadTier | None = None) -> None:
        if hasher.block_size != pool.block_size:
            raise ValueError("hasher and pool disagree on block_size")
        self.pool = pool
        self.hasher = hasher
        self.block_size = pool.block_size
        self.offload = offload

    def update_hashes(self, seq: SeqState) -> None:
        """Hash every newly full block of `seq.token_ids` (prompt and output)."""
        size = self.block_size
        full = len(seq.token_ids) // size
        if len(seq.hashes) >= full:
            return
        parent: BlockHash | None = seq.hashes[-1] if seq.hashes else None
        for index in range(len(seq.hashes), full):
            extra = (("cache_salt", seq.cache_salt),) if index == 0 and seq.cache_salt else None
            parent = self.hasher.hash_block(parent, seq.token_ids[index * size : (index + 1) * size], extra)
            seq.hashes.append(parent)

    def computed_blocks(self, seq: SeqState) -> list[Block]:
        """Longest cached prefix of `seq` (not yet referenced), capped below its last token."""
        if not self.pool.enable_caching:
            return []
        self.update_hashes(seq)
        limit = (len(seq.token_ids) - 1) // self.block_size
        hits: list[Block] = []
        for block_hash in seq.hashes[:limit]:
            block = self.pool.cached_block(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def external_blocks(self, seq: SeqState, num_local: int) -> int:
        """Blocks after the `num_local` GPU hits that the offload tier can load."""
        if self.offload is None or not self.pool.enable_caching:
            return 0
        limit = (len(seq.token_ids) - 1) // self.block_size
        return self.offload.lookup(seq.hashes[num_local:limit]) if limit > num_local else 0

    def allocate_slots(self, seq: SeqState, num_computed: int, num_new: int, hits: list[Block] | None = None) -> bool:
        """Make room for `num_new` tokens after `num_computed`, taking `hits` first.

        Returns:
            False (and nothing changed) when the pool lacks free blocks: backpressure.
        """
        hits = hits or []
        needed = -(-(num_computed + num_new) // self.block_size) - len(seq.blocks) - len(hits)
        # Free cache hits leave the free queue when touched, so they count against it.
        evictable_hits = sum(1 for block in hits if block.ref_cnt == 0)
        if max(needed, 0) + evictable_hits > self.pool.num_free:
            return False
        if hits:
            self.pool.touch(hits)
            seq.blocks.extend(hits)
            seq.num_cached_blocks = len(seq.blocks)
        if needed > 0:
            fresh = self.pool.allocate(needed)
            assert fresh is not None
            seq.blocks.extend(fresh)
        return True

    def cache_blocks(self, seq: SeqState, num_computed: int) -> None:
        """Register the blocks made full by computing `num_computed` tokens."""
        self.update_hashes(seq)
        full = min(num_computed, len(seq.token_ids)) // self.block_size
        if full > seq.num_cached_blocks:
            self.pool.cache_full_blocks(seq.blocks, seq.hashes, seq.num_cached_blocks, full, seq.token_ids)
            seq.num_cached_blocks = full

    def free(self, seq: SeqState) -> None:
        """Release the request's blocks, tail first (the tail is evicted before the prefix)."""
        self.pool.free(list(reversed(seq.blocks)))
        seq.blocks.clear()
        seq.num_cached_blocks = 0
