"""Strata's own chained block keys: fast, engine-independent, used by our indexes.

vLLM's hashes depend on the engine's scheme, seed and extra keys, and SHA-256 over
CBOR costs microseconds per block. Strata's indexes (router prefix index, kvmeta, the
cache tier) key blocks by a cheaper chain that any process can compute from tokens:

    root   = xxh3_64(b"strata-block-v1\\0" + scope)          # scope = model + KV layout
    key_i  = xxh3_64(le64(key_{i-1}) + le32(tokens of block i), seed=0)   key_{-1} = root

* Tokens are packed as little-endian unsigned 32-bit integers (every vocabulary fits).
* The scope string namespaces keys, so two models, or two KV layouts of one model
  (dtype, TP, block size), never share keys: a block is only reusable where its bytes are.
* Keys are 64-bit; at 10^9 distinct blocks the collision odds are ~3e-2 % per key space,
  acceptable for a cache index whose every hit is verified against the payload checksum
  by the cache tier. Not a security boundary: scope per tenant if isolation is needed.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from typing import Final

import xxhash

from strata_contracts.messages.base import BlockKey

__all__ = ["StrataBlockKeys", "scope_root"]

_DOMAIN: Final = b"strata-block-v1\0"
_U64: Final = struct.Struct("<Q")
_TOKEN_MAX: Final = 2**32


def scope_root(scope: str) -> BlockKey:
    """The parent key of a chain's first block for `scope` (e.g. "llama-3-8b|bf16|tp1|b16")."""
    return BlockKey(xxhash.xxh3_64_intdigest(_DOMAIN + scope.encode()))


class StrataBlockKeys:
    """Chained xxh3-64 keys of full token blocks within one scope.

    Args:
        scope: model and KV-layout identity; keys from different scopes never match.
        block_size: tokens per block.
    """

    def __init__(self, scope: str, block_size: int) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.scope = scope
        self.block_size = block_size
        self.root = scope_root(scope)

    def key(self, parent: BlockKey | None, tokens: Sequence[int]) -> BlockKey:
        """Key of one full block chained to `parent` (None = first block of the scope)."""
        packed = _pack(tokens)
        return BlockKey(xxhash.xxh3_64_intdigest(_U64.pack(self.root if parent is None else parent) + packed))

    def keys(self, token_ids: Sequence[int], parent: BlockKey | None = None) -> list[BlockKey]:
        """Keys of every full block of `token_ids`; the partial tail gets none.

        Args:
            token_ids: tokens starting at a block boundary.
            parent: key of the block before `token_ids[0]`, None at the start.
        """
        size = self.block_size
        full = len(token_ids) - len(token_ids) % size
        packed = _pack(token_ids[:full])
        width = 4 * size
        out: list[BlockKey] = []
        prev = self.root if parent is None else parent
        for offset in range(0, 4 * full, width):
            prev = BlockKey(xxhash.xxh3_64_intdigest(_U64.pack(prev) + packed[offset : offset + width]))
            out.append(prev)
        return out


def _pack(tokens: Sequence[int]) -> bytes:
    """Little-endian u32 bytes of `tokens`; raises ValueError outside [0, 2^32)."""
    arr = array("I")
    if arr.itemsize != 4:  # pragma: no cover - every supported platform has 4-byte 'I'
        raise RuntimeError("array('I') is not 32-bit on this platform")
    try:
        arr.extend(tokens)
    except OverflowError as exc:
        raise ValueError(f"token ids must be in [0, {_TOKEN_MAX}): {exc}") from None
    if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian hosts
        arr.byteswap()
    return arr.tobytes()
