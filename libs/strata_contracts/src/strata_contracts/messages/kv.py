"""KV-cache events republished from engines, and prefix lookups against kvmeta."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from strata_contracts.messages.base import Contract, UInt64

__all__ = [
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "KvEvent",
    "KvEventBatch",
    "KvLookupReply",
    "KvLookupRequest",
    "PrefixMatch",
]


class BlockStored(Contract):
    """Full blocks entered the engine's prefix cache (vLLM `BlockStored`)."""

    type: Literal["BlockStored"] = Field(default="BlockStored", description="Event tag (vLLM class name).")
    block_hashes: list[UInt64] = Field(description="Engine block hashes (low 64 bits), in chain order.")
    parent_block_hash: UInt64 | None = Field(
        default=None, description="Hash of the cached block before the first new one; None = chain start."
    )
    token_ids: list[int] = Field(description="Tokens of all new blocks, block_size x len(block_hashes).")
    block_size: int = Field(gt=0, description="Tokens per block.")
    lora_name: str | None = Field(default=None, description="LoRA adapter the blocks belong to.")
    medium: str = Field(default="GPU", description="Storage tier (GPU, CPU, ...).")
    group_idx: int = Field(default=0, ge=0, description="KV-cache group of the blocks.")


class BlockRemoved(Contract):
    """Blocks left the engine's prefix cache (vLLM `BlockRemoved`)."""

    type: Literal["BlockRemoved"] = Field(default="BlockRemoved", description="Event tag (vLLM class name).")
    block_hashes: list[UInt64] = Field(description="Engine block hashes (low 64 bits).")
    medium: str = Field(default="GPU", description="Storage tier (GPU, CPU, ...).")
    group_idx: int = Field(default=0, ge=0, description="KV-cache group of the blocks.")


class AllBlocksCleared(Contract):
    """The engine dropped its whole prefix cache, or the agent lost track and resyncs."""

    type: Literal["AllBlocksCleared"] = Field(default="AllBlocksCleared", description="Event tag (vLLM class name).")
    resync: bool = Field(
        default=False, description="True when emitted by the agent after an unrecoverable sequence gap."
    )


KvEvent = Annotated[BlockStored | BlockRemoved | AllBlocksCleared, Field(discriminator="type")]


class KvEventBatch(Contract):
    """`strata.kv.v1.events.<engine>`: one engine step's KV events."""

    engine_id: str = Field(description="Engine that produced the events.")
    seq: int = Field(ge=0, description="Engine publisher sequence number of the batch.")
    ts: float = Field(description="Engine timestamp of the step (s).")
    dp_rank: int | None = Field(default=None, ge=0, description="Data-parallel rank, if any.")
    events: list[KvEvent] = Field(description="Events in engine order.")


class KvLookupRequest(Contract):
    """`strata.kv.v1.lookup` request: which holders have the longest prefix of these blocks."""

    model: str = Field(description="Model (and KV layout scope) the keys belong to.")
    block_keys: list[UInt64] = Field(description="Strata chained block keys of the prompt, in order.")
    engines: list[str] | None = Field(default=None, description="Restrict the answer to these engines.")


class PrefixMatch(Contract):
    """Longest cached prefix one holder has."""

    holder: str = Field(description="Engine id or cache-server id.")
    tier: Literal["engine", "cache"] = Field(description="Engine KV cache or the cache-server tier.")
    blocks: int = Field(ge=0, description="Number of leading blocks held.")


class KvLookupReply(Contract):
    """`strata.kv.v1.lookup` reply."""

    matches: list[PrefixMatch] = Field(description="One entry per holder with a non-empty match.")
    ring_epoch: int | None = Field(default=None, ge=0, description="Ring epoch the answer was made at.")
