"""vLLM KV-event wire codec: byte-exact against payloads produced by the real vLLM."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from strata_contracts.hashing import external_hash
from strata_contracts.messages import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch
from strata_contracts.vllm_kv_events import (
    SEQ_END,
    ExternalHash,
    VllmAllBlocksCleared,
    VllmBlockRemoved,
    VllmBlockStored,
    VllmEventBatch,
    VllmKvEvent,
    WireShape,
    decode_batch,
    decode_seq,
    encode_batch,
    encode_seq,
    to_contract,
)
from strata_testing.vllm_env import require_vllm_python

GOLDEN = Path(__file__).parent / "golden"
GENERATOR = GOLDEN / "gen_vllm_kv_events.py"
VECTORS: dict[str, Any] = json.loads((GOLDEN / "vllm_kv_events.json").read_text())
CASES: list[dict[str, Any]] = VECTORS["cases"]
REENCODABLE = [c for c in CASES if c["reencode"]]


def _id(case: dict[str, Any]) -> str:
    return f"{case['shape']}-{case['name']}"


def _hash(desc: Any) -> ExternalHash:
    return bytes.fromhex(desc["bytes"]) if isinstance(desc, dict) else int(desc)


def _event(desc: dict[str, Any]) -> VllmKvEvent:
    fields = {k: v for k, v in desc.items() if k != "type"}
    if "block_hashes" in fields:
        fields["block_hashes"] = [_hash(h) for h in fields["block_hashes"]]
    if fields.get("parent_block_hash") is not None:
        fields["parent_block_hash"] = _hash(fields["parent_block_hash"])
    if fields.get("extra_keys") is not None:
        fields["extra_keys"] = [None if k is None else tuple(k) for k in fields["extra_keys"]]
    cls = {"BlockStored": VllmBlockStored, "BlockRemoved": VllmBlockRemoved, "AllBlocksCleared": VllmAllBlocksCleared}
    return cls[desc["type"]](**fields)  # type: ignore[no-any-return]


def batch_from(desc: dict[str, Any]) -> VllmEventBatch:
    """The batch a golden description stands for."""
    return VllmEventBatch(desc["ts"], [_event(e) for e in desc["events"]], desc["data_parallel_rank"])


def _payload(case: dict[str, Any]) -> bytes:
    return bytes.fromhex(case["payload_hex"])


def test_vectors_cover_every_shape_and_feature() -> None:
    from_vllm = [c for c in CASES if c["source"] == "vllm"]
    assert {c["shape"] for c in from_vllm} == {"mixed"}, "vllm 0.32 only emits the mixed shape"
    assert {c["shape"] for c in CASES} == {s.value for s in WireShape}
    stored = [e for c in from_vllm for e in c["batch"]["events"] if e["type"] == "BlockStored"]
    assert any(isinstance(e["block_hashes"][0], int) for e in stored)
    assert any(isinstance(e["block_hashes"][0], dict) for e in stored), "bytes hashes"
    assert {e["parent_block_hash"] is None for e in stored} == {True, False}
    assert any(e["kv_cache_spec_kind"] == "full_attention" and e["group_idx"] == 0 for e in stored)
    assert any(e["lora_name"] for e in stored)
    assert {c["batch"]["data_parallel_rank"] for c in from_vllm} >= {None, 1}
    kinds = {e["type"] for c in from_vllm for e in c["batch"]["events"]}
    assert kinds == {"BlockStored", "BlockRemoved", "AllBlocksCleared"}


@pytest.mark.parametrize("case", REENCODABLE, ids=_id)
def test_encoder_reproduces_golden_bytes(case: dict[str, Any]) -> None:
    """MIXED cases were encoded by vLLM itself; the others follow the reference table."""
    assert encode_batch(batch_from(case["batch"]), WireShape(case["shape"])).hex() == case["payload_hex"]


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_decoder_reads_every_golden_case(case: dict[str, Any]) -> None:
    assert decode_batch(_payload(case)) == batch_from(case["batch"])


@pytest.mark.parametrize("shape", list(WireShape))
@pytest.mark.parametrize("case", [c for c in CASES if c["source"] == "vllm"], ids=lambda c: c["name"])
def test_round_trip_per_shape(case: dict[str, Any], shape: WireShape) -> None:
    batch = batch_from(case["batch"])
    assert decode_batch(encode_batch(batch, shape)) == batch


def test_mixed_event_maps_omit_only_fields_vllm_declares_with_default() -> None:
    event = VllmBlockStored([1], None, [1, 2], 2, lora_id=None, medium=None, lora_name=None)
    [wire_event] = msgpack.unpackb(encode_batch(VllmEventBatch(1.0, [event])))[1]
    assert list(wire_event) == [
        "type", "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name",
    ]  # fmt: skip
    assert msgpack.unpackb(encode_batch(VllmEventBatch(1.0, [VllmBlockRemoved([1], None)])))[1] == [
        {"type": "BlockRemoved", "block_hashes": [1], "medium": None}
    ]


def test_bytes_hashes_become_their_low_64_bits_in_the_contract() -> None:
    case = next(c for c in CASES if c["name"] == "stored-bytes-hashes-with-parent-lora" and c["shape"] == "mixed")
    decoded = decode_batch(_payload(case))
    stored = decoded.events[0]
    assert isinstance(stored, VllmBlockStored)
    assert all(isinstance(h, bytes) and len(h) == 32 for h in stored.block_hashes)
    contract = to_contract(decoded, "engine-a", 7)
    [event] = contract.events
    assert isinstance(event, BlockStored)
    digests = [bytes.fromhex(h["bytes"]) for h in case["batch"]["events"][0]["block_hashes"]]
    assert event.block_hashes == [int.from_bytes(d[-8:], "big") for d in digests]
    assert event.block_hashes == [external_hash(d) for d in digests]
    assert event.parent_block_hash == external_hash(
        bytes.fromhex(case["batch"]["events"][0]["parent_block_hash"]["bytes"])
    )
    assert (event.lora_name, event.medium, event.group_idx) == ("adapter-a", "GPU", 1)
    assert (contract.engine_id, contract.seq, contract.dp_rank) == ("engine-a", 7, 1)


def test_contract_defaults_medium_and_group_and_masks_ints() -> None:
    batch = VllmEventBatch(
        2.5,
        [
            VllmBlockStored([2**64 + 5], None, [1], 1, medium=None),
            VllmBlockRemoved([-1], medium=None),
            VllmAllBlocksCleared(),
        ],
    )
    contract = to_contract(batch, "e", 0)
    assert contract == KvEventBatch(
        engine_id="e",
        seq=0,
        ts=2.5,
        events=[
            BlockStored(block_hashes=[5], token_ids=[1], block_size=1, medium="GPU", group_idx=0),
            BlockRemoved(block_hashes=[2**64 - 1], medium="GPU", group_idx=0),
            AllBlocksCleared(),
        ],
    )


@pytest.mark.parametrize("parent", [0, None])
def test_parent_zero_means_no_parent(parent: int | None) -> None:
    payload = msgpack.packb([1.0, [["BlockStored", [9], parent, [1], 1, None, "GPU", None]], None])
    event = decode_batch(payload).events[0]
    assert isinstance(event, VllmBlockStored)
    assert event.parent_block_hash is None


GARBAGE = [
    (b"", "not valid msgpack"),
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb([1.0, []]) + b"\x00", "not valid msgpack"),
    (msgpack.packb("hello"), "batch: expected map or array"),
    (msgpack.packb([1.0]), "batch: expected map or array"),
    (msgpack.packb({"events": []}), "batch: missing field ts"),
    (msgpack.packb(["x", []]), "batch.ts: expected float"),
    (msgpack.packb([1.0, {}]), "batch.events: expected array"),
    (msgpack.packb([1.0, [{"type": "Mystery"}]]), r"batch.events\[0\].type: unknown KV event type 'Mystery'"),
    (msgpack.packb([1.0, [[]]]), r"batch.events\[0\]: expected event map or non-empty array"),
    (msgpack.packb([1.0, [["BlockStored", [1], None]]]), r"events\[0\] \(BlockStored\): missing field\(s\) block_size"),
    (msgpack.packb([1.0, [{"type": "BlockRemoved", "block_hashes": ["ab"]}]]), r"block_hashes\[0\]: expected uint64"),
    (msgpack.packb([1.0, [["BlockStored", [1], None, [1, True], 1]]]), r"token_ids\[1\]: expected int"),
    (msgpack.packb([1.0, [["BlockStored", [1], None, [1], 1, None, 5]]]), r"events\[0\].medium: expected str"),
    (msgpack.packb([1.0, [], "zero"]), "batch.data_parallel_rank: expected int or nil"),
    (msgpack.packb([1.0, [{"type": "BlockStored", "block_hashes": [1], "token_ids": [], "block_size": 1,
                           "extra_keys": [5]}]]), r"extra_keys\[0\]: expected array or nil"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "message"), GARBAGE, ids=[m for _, m in GARBAGE])
def test_garbage_raises_value_error_naming_the_problem(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_batch(payload)


def test_unencodable_hash_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_batch(VllmEventBatch(1.0, [VllmBlockRemoved([2**64])]))


@pytest.mark.parametrize(("seq", "frame"), [(0, b"\0" * 8), (258, b"\0" * 6 + b"\1\2"), (SEQ_END, b"\xff" * 8)])
def test_seq_frames_are_8_byte_big_endian(seq: int, frame: bytes) -> None:
    assert encode_seq(seq) == frame
    assert decode_seq(frame) == seq


def test_seq_frame_errors() -> None:
    assert encode_seq(SEQ_END) == (-1).to_bytes(8, "big", signed=True)  # vLLM END_SEQ
    with pytest.raises(ValueError, match="uint64"):
        encode_seq(-1)
    with pytest.raises(ValueError, match="uint64"):
        encode_seq(2**64)
    with pytest.raises(ValueError, match="8 bytes, got 4"):
        decode_seq(b"\0" * 4)


def _run_vllm(args: list[str], stdin: str | None = None) -> str:
    python = require_vllm_python()
    result = subprocess.run(
        [python, str(GENERATOR), *args], input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.vllm
def test_golden_vectors_regenerated_by_vllm() -> None:
    """Re-runs the generator with the real vLLM and compares with the checked-in file."""
    fresh = json.loads(_run_vllm([]))
    assert fresh == VECTORS


@pytest.mark.vllm
def test_vllm_decodes_our_payloads() -> None:
    """vLLM's own msgspec decoder reads what we encode (MIXED: the only shape vLLM 0.32 reads)."""
    batches = [batch_from(c["batch"]) for c in CASES]
    shapes = list(WireShape)
    payloads = [encode_batch(b, s).hex() for b in batches for s in shapes]
    results = json.loads(_run_vllm(["--decode"], json.dumps(payloads)))
    for index, (batch, shape) in enumerate((b, s) for b in batches for s in shapes):
        got = results[index]
        if shape is WireShape.MIXED or (shape is WireShape.POSITIONAL and not batch.events):  # same bytes
            assert "error" not in got, got
            assert batch_from(got) == batch
        else:  # vLLM 0.32's typed decoder wants an array batch of event maps
            assert "error" in got, (shape, got)
