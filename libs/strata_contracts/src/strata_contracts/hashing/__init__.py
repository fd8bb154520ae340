"""Block hashing: vLLM-compatible prefix hashes and Strata's own chained keys."""

from strata_contracts.hashing.strata import StrataBlockKeys, scope_root
from strata_contracts.hashing.vllm import (
    DEFAULT_NONE_HASH_SEED,
    BlockHash,
    LoraKey,
    VllmBlockHasher,
    external_hash,
    hash_function,
)

__all__ = [
    "DEFAULT_NONE_HASH_SEED",
    "BlockHash",
    "LoraKey",
    "StrataBlockKeys",
    "VllmBlockHasher",
    "external_hash",
    "hash_function",
    "scope_root",
]
