"""vLLM-compatible prefix-cache block hashes (bit-exact with vLLM 0.32's v1 KV manager).

vLLM identifies a full block of `block_size` tokens by a chained hash::

    hash_0 = H((NONE_HASH, tuple(tokens[0:B]),  extra_keys_0))
    hash_i = H((hash_{i-1}, tuple(tokens[iB:(i+1)B]), extra_keys_i))

where `H` is the serializer + digest chosen by `--prefix-caching-hash-algo`:

    ===========  ======================================  ===============
    scheme       serialization                           digest
    ===========  ======================================  ===============
    sha256       pickle, highest protocol (default)      SHA-256, 32 B
    sha256_cbor  canonical CBOR (3-element array)        SHA-256, 32 B
    xxhash       pickle                                  xxh3-128, 16 B
    xxhash_cbor  canonical CBOR                          xxh3-128, 16 B
    ===========  ======================================  ===============

Only full blocks are hashed; the partial tail of a prompt never is.

`NONE_HASH` (the parent of the first block) is `H(seed)` with the seed resolved as in
vLLM's `resolve_none_hash_seed`: `PYTHONHASHSEED` of the engine if set; otherwise the fixed
string ``"vllm-none-hash"`` for the SHA-256 schemes, and 32 random bytes per process for
the xxhash schemes. The latter are therefore *not reproducible* outside the engine
unless the engine runs with `PYTHONHASHSEED`; :class:`VllmBlockHasher` refuses them
without an explicit seed rather than silently disagreeing with the engine.
Security trade-off (vLLM's reasoning, kept): SHA-256 collision resistance does not need
a secret seed, while xxh3 does, so a fixed seed is only defaulted for SHA-256.

`extra_keys` is None unless the request needs more than tokens to be identified; vLLM
0.32 builds it per block as the concatenation of tagged tuples, in this order:
``("lora", lora_name, lora_path)`` on every block of a LoRA request, multimodal keys
(not supported here: Strata routes text), ``("cache_salt", salt)`` on the first block
only, prompt-embedding hashes (not supported here).

KV events carry the low 64 bits of each digest read big-endian
(`VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1`, the default): :func:`external_hash`.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from typing import Any, Final, NewType

import cbor2
import xxhash

from strata_contracts.messages.engine import HashScheme

__all__ = [
    "DEFAULT_NONE_HASH_SEED",
    "BlockHash",
    "LoraKey",
    "VllmBlockHasher",
    "external_hash",
    "hash_function",
]

BlockHash = NewType("BlockHash", bytes)
"""A full vLLM block digest (32 bytes for SHA-256, 16 for xxh3-128)."""

LoraKey = tuple[str, str]
"""(lora_name, lora_path) of a LoRA request; both enter the hash."""

DEFAULT_NONE_HASH_SEED: Final = "vllm-none-hash"
_MASK64: Final = (1 << 64) - 1
_CRYPTO: Final = frozenset({HashScheme.SHA256, HashScheme.SHA256_CBOR})


def _pickle(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _cbor(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


_SCHEMES: Final[dict[HashScheme, tuple[Callable[[Any], bytes], Callable[[bytes], bytes]]]] = {
    HashScheme.SHA256: (_pickle, _sha256),
    HashScheme.SHA256_CBOR: (_cbor, _sha256),
    HashScheme.XXHASH: (_pickle, xxhash.xxh3_128_digest),
    HashScheme.XXHASH_CBOR: (_cbor, xxhash.xxh3_128_digest),
}


def hash_function(scheme: HashScheme) -> Callable[[Any], bytes]:
    """Return vLLM's `get_hash_fn_by_name(scheme)` equivalent: object -> digest."""
    serialize, digest = _SCHEMES[scheme]
    return lambda obj: digest(serialize(obj))


def external_hash(block_hash: bytes) -> int:
    """The form KV events carry: the digest read big-endian, low 64 bits."""
    return int.from_bytes(block_hash, "big") & _MASK64


class VllmBlockHasher:
    """Computes the block hashes a vLLM engine with a given configuration computes.

    Args:
        scheme: the engine's `--prefix-caching-hash-algo`.
        block_size: the engine's KV block size in tokens.
        seed: the engine's `PYTHONHASHSEED`, or None if it runs without one.

    Raises:
        ValueError: bad block size, or an xxhash scheme without a seed (the engine's
            hashes would be random per process).
    """

    def __init__(self, scheme: HashScheme, block_size: int, seed: str | None = None) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if seed is None and scheme not in _CRYPTO:
            raise ValueError(
                f"scheme {scheme.value!r} uses a random per-process seed unless the engine "
                "sets PYTHONHASHSEED; pass that seed to reproduce its hashes"
            )
        self.scheme = scheme
        self.block_size = block_size
        self._hash = hash_function(scheme)
        self.none_hash = BlockHash(self._hash(DEFAULT_NONE_HASH_SEED if seed is None else seed))

    def hash_block(
        self,
        parent: bytes | None,
        tokens: Sequence[int],
        extra_keys: tuple[Any, ...] | None = None,
    ) -> BlockHash:
        """Hash one full block chained to `parent` (None or empty = first block)."""
        return BlockHash(self._hash((parent or self.none_hash, tuple(tokens), extra_keys)))

    def hash_prompt(
        self,
        token_ids: Sequence[int],
        *,
        lora: LoraKey | None = None,
        cache_salt: str | None = None,
    ) -> list[BlockHash]:
        """Hashes of every full block of `token_ids`, as vLLM's request block hasher.

        Args:
            token_ids: the whole token sequence (prompt, possibly plus output).
            lora: (name, path) of the LoRA adapter, if the request uses one.
            cache_salt: the request's `cache_salt`; empty or None means none.
        """
        lora_keys: list[tuple[str, ...]] = [("lora", lora[0], lora[1])] if lora else []
        size = self.block_size
        hashes: list[BlockHash] = []
        parent: bytes | None = None
        for start in range(0, len(token_ids) - size + 1, size):
            keys = [*lora_keys, ("cache_salt", cache_salt)] if start == 0 and cache_salt else lora_keys
            parent = self.hash_block(parent, token_ids[start : start + size], tuple(keys) or None)
            hashes.append(parent)
        return hashes
