"""vLLM block hashes: bit-exact against golden vectors produced by real vLLM."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from strata_contracts.hashing import VllmBlockHasher, external_hash
from strata_contracts.messages import HashScheme
from strata_testing.vllm_env import require_vllm_python

GOLDEN = Path(__file__).parent / "golden"
VECTORS: dict[str, Any] = json.loads((GOLDEN / "vllm_block_hashes.json").read_text())


def _case_id(case: dict[str, Any]) -> str:
    extras = "+lora" * bool(case["lora"]) + "+salt" * bool(case["cache_salt"])
    return f"{case['scheme']}-seed={case['seed']}-b{case['block_size']}-n{len(case['token_ids'])}{extras}"


def mismatches(case: dict[str, Any]) -> list[str]:
    """Every way our hasher disagrees with one golden case (empty = bit-exact)."""
    hasher = VllmBlockHasher(HashScheme(case["scheme"]), case["block_size"], case["seed"])
    lora = tuple(case["lora"]) if case["lora"] else None
    ours = hasher.hash_prompt(case["token_ids"], lora=lora, cache_salt=case["cache_salt"])  # type: ignore[arg-type]
    problems = []
    if hasher.none_hash.hex() != case["none_hash"]:
        problems.append("none_hash")
    if [h.hex() for h in ours] != case["block_hashes"]:
        problems.append("block_hashes")
    if [external_hash(h) for h in ours] != case["external_hashes"]:
        problems.append("external_hashes")
    return problems


def test_vectors_cover_every_scheme_and_feature() -> None:
    cases = VECTORS["cases"]
    assert {c["scheme"] for c in cases} == {s.value for s in HashScheme}
    assert any(c["lora"] and c["cache_salt"] for c in cases)
    assert any(c["block_size"] == 128 for c in cases)
    assert any(len(c["block_hashes"]) == 0 for c in cases), "a prompt shorter than one block"
    assert any(c["seed"] is None for c in cases), "vLLM's default seed for SHA-256 schemes"


@pytest.mark.parametrize("case", VECTORS["cases"], ids=_case_id)
def test_matches_vllm_golden_vector(case: dict[str, Any]) -> None:
    assert len(case["block_hashes"]) == len(case["token_ids"]) // case["block_size"]
    assert mismatches(case) == []


@pytest.mark.parametrize("field", ["token_ids", "block_hashes", "none_hash", "cache_salt"])
def test_one_changed_byte_is_detected(field: str) -> None:
    case = copy.deepcopy(next(c for c in VECTORS["cases"] if c["cache_salt"] and c["block_hashes"]))
    if field == "token_ids":
        case["token_ids"][3] ^= 1
    elif field == "cache_salt":
        case["cache_salt"] = case["cache_salt"][:-1] + "X"
    elif field == "none_hash":
        case["none_hash"] = ("0" if case["none_hash"][0] != "0" else "1") + case["none_hash"][1:]
    else:
        first = case["block_hashes"][0]
        case["block_hashes"][0] = first[:-2] + f"{int(first[-2:], 16) ^ 1:02x}"
    assert mismatches(case) != []


def test_xxhash_without_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="PYTHONHASHSEED"):
        VllmBlockHasher(HashScheme.XXHASH_CBOR, 16)


def test_only_full_blocks_are_hashed() -> None:
    hasher = VllmBlockHasher(HashScheme.SHA256_CBOR, 4)
    assert len(hasher.hash_prompt(list(range(11)))) == 2
    assert hasher.hash_prompt(list(range(8))) == hasher.hash_prompt(list(range(11)))[:2]


@pytest.mark.vllm
def test_golden_vectors_recomputed_by_vllm() -> None:
    """Regenerates every vector with the real vLLM and compares with the checked-in file."""
    python = require_vllm_python()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    result = subprocess.run(
        [python, str(GOLDEN / "gen_vllm_block_hashes.py")], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    fresh = json.loads(result.stdout)
    assert fresh["cases"] == VECTORS["cases"]
