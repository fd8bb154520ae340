"""Every contract: strict, immutable, documented, round-trips, and hot messages stay small."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from strata_contracts import decode, encode
from strata_contracts.catalog import CHANNELS, Transport, address
from strata_contracts.examples import examples
from strata_contracts.hashing import StrataBlockKeys
from strata_contracts.messages import (
    BlockStored,
    Contract,
    EngineLoad,
    KvEventBatch,
    RoutePick,
)

EXAMPLES = examples()
MODELS = sorted({type(m) for m in EXAMPLES}, key=lambda cls: cls.__name__)


def _all_models(cls: type[BaseModel]) -> set[type[BaseModel]]:
    found = {cls}
    for info in cls.model_fields.values():
        for arg in (*getattr(info.annotation, "__args__", ()), info.annotation):
            for inner in (*getattr(arg, "__args__", ()), arg):
                if isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in found:
                    found |= _all_models(inner)
    return found


def test_catalog_covers_every_example_and_reply() -> None:
    covered = {c.message for c in CHANNELS} | {c.reply for c in CHANNELS if c.reply}
    assert covered == set(MODELS)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(example: Contract) -> None:
    assert decode(type(example), encode(example)) == example


@pytest.mark.parametrize("model", sorted({m for cls in MODELS for m in _all_models(cls)}, key=str), ids=str)
def test_models_are_frozen_strict_and_documented(model: type[BaseModel]) -> None:
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "forbid"
    undocumented = [name for name, info in model.model_fields.items() if not info.description]
    assert undocumented == []


@pytest.mark.parametrize("model", sorted({m for cls in MODELS for m in _all_models(cls)}, key=str), ids=str)
def test_nullable_fields_default_to_none(model: type[BaseModel]) -> None:
    """encode() drops None values, so every nullable field must decode back to None when absent."""
    required_nullable = [
        name
        for name, info in model.model_fields.items()
        if info.is_required() and type(None) in getattr(info.annotation, "__args__", ())
    ]
    assert required_nullable == []


def test_unknown_field_and_mutation_rejected() -> None:
    load = next(m for m in EXAMPLES if isinstance(m, EngineLoad))
    with pytest.raises(ValidationError, match="extra"):
        decode(EngineLoad, encode(load)[:-1] + b',"surprise":1}')
    with pytest.raises(ValidationError, match="frozen"):
        load.running = 9  # type: ignore[misc]


def test_kv_events_discriminated_by_type() -> None:
    raw = (
        b'{"engine_id":"e","seq":1,"ts":0,"events":[{"type":"AllBlocksCleared"},'
        b'{"type":"BlockRemoved","block_hashes":[18446744073709551615]}]}'
    )
    batch = decode(KvEventBatch, raw)
    assert [type(e).__name__ for e in batch.events] == ["AllBlocksCleared", "BlockRemoved"]
    with pytest.raises(ValidationError):
        decode(KvEventBatch, raw.replace(b"18446744073709551615", b"18446744073709551616"))


def test_every_example_has_an_address() -> None:
    requests = {c.message for c in CHANNELS}
    for example in EXAMPLES:
        if type(example) in requests:
            assert address(example)
    with pytest.raises(TypeError):
        address(next(m for m in EXAMPLES if type(m) not in requests))


def test_kv_channels_name_their_container() -> None:
    assert all(c.container for c in CHANNELS if c.transport in (Transport.KV, Transport.STREAM))


# --- size budgets of the hot messages (published per engine every 50-100 ms, per step, per request) ---


def test_engine_load_fits_budget() -> None:
    load = EngineLoad(
        engine_id="engine-pool-a-0123456789",
        seq=10**9,
        ts=1795500000.123456,
        running=256,
        waiting=1024,
        kv_usage=0.987654321,
        prompt_tps=123456.789,
        generation_tps=98765.4321,
        prefix_hit_rate=0.5,
        preemptions=3,
    )
    assert len(encode(load)) <= 320


def test_kv_event_batch_overhead_budget() -> None:
    """One step storing 8 blocks of 16 tokens: the JSON costs at most ~8 bytes per token plus 400."""
    tokens = list(range(120_000, 120_128))
    hashes = [2**64 - 1 - i for i in range(8)]
    batch = KvEventBatch(
        engine_id="engine-0",
        seq=10**6,
        ts=1795500000.5,
        events=[BlockStored(block_hashes=hashes, parent_block_hash=2**63, token_ids=tokens, block_size=16)],
    )
    assert len(encode(batch)) <= 400 + 8 * len(tokens)


def test_route_pick_budget() -> None:
    keys = StrataBlockKeys("m", 16).keys(list(range(16 * 64)))
    pick = RoutePick(
        request_id="3f0c6a1e-8b5d-4d1f-9a51-0e2b7c9d4a11",
        model="meta-llama/Llama-3.1-8B-Instruct",
        strategy="prefix-cache",
        tenant_id="acme",
        session_id="sess-123",
        prompt_chars=4096,
        block_keys=keys,
        max_tokens=512,
        deadline_ms=20,
    )
    assert len(encode(pick)) <= 300 + 21 * len(keys)  # at most 20 digits + comma per key
