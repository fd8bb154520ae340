"""A paged KV cache with automatic prefix caching, modelled on vLLM v1's BlockPool.

::

    blocks:        [0][1][2] ... [N-1]           fixed pool, ref-counted
    free queue:    head ─ LRU ─────────▶ tail    (OrderedDict of block ids)
                   evict here             freed blocks appended here
    cached:        block hash ─▶ {block id: None}  full blocks that may be reused

* A block holds `block_size` tokens of one request. When it becomes full its chained
  hash (vLLM's, from strata_contracts) is registered in `cached` and a BlockStored
  event is queued; the block stays cached after its request frees it (ref count 0,
  back in the free queue) until the allocator takes it for new data, which evicts it
  (BlockRemoved).
* A request frees its blocks in reverse order, so the tail of a prompt is evicted
  before its head, exactly like vLLM: shared prefixes survive longest.
* Two requests computing the same block concurrently each register a copy under the
  same hash (vLLM does the same), so events may store or remove a hash twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from strata_contracts.hashing import BlockHash, external_hash
from strata_contracts.vllm_kv_events import VllmAllBlocksCleared, VllmBlockRemoved, VllmBlockStored, VllmKvEvent

__all__ = ["Block", "BlockPool"]


@dataclass(slots=True)
class Block:
    """One KV block: its id, reference count and, once full, its hash."""

    block_id: int
    ref_cnt: int = 0
    block_hash: BlockHash | None = None


class BlockPool:
    """Fixed pool of KV blocks with an LRU free queue and a prefix-cache index.

    Args:
        num_blocks: blocks in the pool.
        block_size: tokens per block.
        enable_caching: when False nothing is registered or reused (and no events).
        on_evict: called with the hash of every evicted cached block (the offload seam).
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_caching: bool = True,
        on_evict: Callable[[BlockHash], None] | None = None,
    ) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks and block_size must be positive, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._cached: dict[BlockHash, dict[int, None]] = {}
        self._events: list[VllmKvEvent] = []
        self.num_evicted = 0
        self._on_evict = on_evict

    # --- queries -----------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks with no user (cached or empty): what allocation can take."""
        return len(self._free)

    def usage(self) -> float:
        """vLLM's kv_cache_usage_perc: share of blocks held by requests."""
        return 1.0 - self.num_free / self.num_blocks

    def cached_block(self, block_hash: BlockHash) -> Block | None:
        """A block holding `block_hash`, if any is cached."""
        ids = self._cached.get(block_hash)
        return self.blocks[next(iter(ids))] if ids else None

    def num_cached(self) -> int:
        """Distinct hashes currently reusable."""
        return len(self._cached)

    # --- allocation ----------------------------------------------------------------------------
    def touch(self, blocks: Sequence[Block]) -> None:
        """Take a reference on cache-hit blocks (removing free ones from the free queue)."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self._free[block.block_id]
            block.ref_cnt += 1

    def allocate(self, count: int) -> list[Block] | None:
        """Take `count` blocks from the LRU head, evicting their cached content.

        Returns:
            The blocks (ref count 1), or None when fewer than `count` are free (nothing taken).
        """
        if count > len(self._free):
            return None
        taken = []
        for _ in range(count):
            block_id, _ = self._free.popitem(last=False)
            block = self.blocks[block_id]
            if block.block_hash is not None:
                self._evict(block)
            block.ref_cnt = 1
            taken.append(block)
        return taken

    def free(self, blocks: Sequence[Block]) -> None:
        """Drop one reference on each block, given in eviction order (first = evicted first)."""
        for block in blocks:
            block.ref_cnt -= 1
            assert block.ref_cnt >= 0, f"block {block.block_id} freed twice"
            if block.ref_cnt == 0:
                self._free[block.block_id] = None

    # --- caching ---------------------------------------------------------------------------------
    def cache_full_blocks(
        self,
        blocks: Sequence[Block],
        hashes: Sequence[BlockHash],
        start: int,
        end: int,
        token_ids: Sequence[int],
    ) -> None:
        """Register blocks[start:end] (now full) under hashes[start:end] and queue BlockStored.

        Args:
            blocks: the request's block table.
            hashes: the request's block hashes (at least `end` of them).
            start: index of the first block not yet cached.
            end: one past the last full block.
            token_ids: the request's tokens (prompt + output), for the event payload.
        """
        if not self.enable_caching or start >= end:
            return
        size = self.block_size
        for index in range(start, end):
            block = blocks[index]
            if block.block_hash is not None:  # a cache hit reused as-is
                continue
            block.block_hash = hashes[index]
            self._cached.setdefault(hashes[index], {})[block.block_id] = None
        parent = external_hash(hashes[start - 1]) if start > 0 else None
        self._events.append(
            VllmBlockStored(
                block_hashes=[external_hash(h) for h in hashes[start:end]],
                parent_block_hash=parent,
                token_ids=list(token_ids[start * size : end * size]),
                block_size=size,
                lora_id=None,
                medium="GPU",
                lora_name=None,
                extra_keys=[None] * (end - start),
                group_idx=0,
                kv_cache_spec_kind="full_attention",
            )
        )

    def _evict(self, block: Block) -> None:
        assert block.block_hash is not None
        copies = self._cached.get(block.block_hash)
        if copies is not None:
            copies.pop(block.block_id, None)
            if not copies:
                del self._cached[block.block_hash]
        self._events.append(VllmBlockRemoved(block_hashes=[external_hash(block.block_hash)], medium="GPU", group_idx=0))
        if self._on_evict is not None:
            self._on_evict(block.block_hash)
        block.block_hash = None
        self.num_evicted += 1

    def reset_prefix_cache(self) -> bool:
        """Forget every cached block (vLLM's /reset_prefix_cache); False while blocks are in use."""
        if self.num_free != self.num_blocks:
            return False
        for block in self.blocks:
            block.block_hash = None
        self._cached.clear()
        self._events.append(VllmAllBlocksCleared())
        return True

    def take_events(self) -> list[VllmKvEvent]:
        """Events queued since the last call, in order (called once per engine step)."""
        events, self._events = self._events, []
        return events
