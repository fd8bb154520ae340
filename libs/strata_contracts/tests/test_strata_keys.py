"""Strata's own chained block keys: golden vectors and chain properties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xxhash

from strata_contracts.hashing import StrataBlockKeys, scope_root

GOLDEN = json.loads((Path(__file__).parent / "golden" / "strata_block_keys.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"{c['scope']}-b{c['block_size']}")
def test_golden_vectors(case: dict) -> None:  # type: ignore[type-arg]
    keys = StrataBlockKeys(case["scope"], case["block_size"])
    assert keys.root == case["root"]
    assert keys.keys(case["token_ids"]) == case["keys"]


def test_definition_spelled_out_independently() -> None:
    """The documented formula, computed by hand, equals the implementation."""
    root = xxhash.xxh3_64_intdigest(b"strata-block-v1\0" + b"m|bf16")
    first = xxhash.xxh3_64_intdigest(root.to_bytes(8, "little") + b"".join(t.to_bytes(4, "little") for t in (1, 2)))
    second = xxhash.xxh3_64_intdigest(first.to_bytes(8, "little") + b"".join(t.to_bytes(4, "little") for t in (3, 4)))
    assert StrataBlockKeys("m|bf16", 2).keys([1, 2, 3, 4, 5]) == [first, second]


def test_chain_and_incremental_agree() -> None:
    keys = StrataBlockKeys("m", 4)
    tokens = list(range(100, 117))
    whole = keys.keys(tokens)
    assert len(whole) == 4
    assert keys.keys(tokens[8:], parent=whole[1]) == whole[2:]
    assert keys.key(whole[0], tokens[4:8]) == whole[1]
    assert keys.key(None, tokens[:4]) == whole[0]


def test_scope_separates_models() -> None:
    tokens = list(range(32))
    assert scope_root("a") != scope_root("b")
    assert set(StrataBlockKeys("a", 16).keys(tokens)).isdisjoint(StrataBlockKeys("b", 16).keys(tokens))


def test_prefix_change_changes_every_later_key() -> None:
    keys = StrataBlockKeys("m", 4)
    a = keys.keys([1, 2, 3, 4, 5, 6, 7, 8])
    b = keys.keys([1, 2, 3, 9, 5, 6, 7, 8])
    assert a[0] != b[0]
    assert a[1] != b[1]


@pytest.mark.parametrize("bad", [[-1], [2**32]])
def test_out_of_range_tokens_rejected(bad: list[int]) -> None:
    with pytest.raises(ValueError, match="token ids"):
        StrataBlockKeys("m", 1).keys(bad)


@pytest.mark.parametrize("field", ["token_ids", "keys", "scope"])
def test_one_changed_value_is_detected(field: str) -> None:
    case = {k: (list(v) if isinstance(v, list) else v) for k, v in GOLDEN["cases"][0].items()}
    if field == "token_ids":
        case["token_ids"][0] ^= 1
    elif field == "keys":
        case["keys"][-1] ^= 1
    else:
        case["scope"] += "x"
    keys = StrataBlockKeys(case["scope"], case["block_size"])
    assert keys.keys(case["token_ids"]) != case["keys"]
