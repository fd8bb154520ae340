"""Discovery: /v1/models, /version and cache_config_info into an EngineRegistration."""

from __future__ import annotations

from typing import Any

import pytest

from strata_contracts.messages import EngineKind, HashScheme
from strata_engineagent.domain.discovery import (
    DiscoveryIncomplete,
    ModelInfo,
    build_registration,
    detect_kind,
    hash_scheme,
    parse_models,
)
from strata_engineagent.domain.load import CacheConfig
from strata_engineagent.settings import EngineSpec

VLLM_MODELS: dict[str, Any] = {  # measured shape, vLLM 0.32 (reference §4)
    "object": "list",
    "data": [
        {
            "id": "tiny",
            "object": "model",
            "created": 1795501055,
            "owned_by": "vllm",
            "root": "/models/tiny-llama",
            "parent": None,
            "max_model_len": 4096,
            "permission": [{"id": "modelperm-1", "object": "model_permission"}],
        }
    ],
}
CACHE = CacheConfig(block_size=128, num_gpu_blocks=4096, hash_algo="sha256_cbor", prefix_caching=True)


def spec(**overrides: Any) -> EngineSpec:
    return EngineSpec.model_validate({"engine_id": "e1", "url": "http://127.0.0.1:8000", **overrides})


def test_parse_vllm_models() -> None:
    assert parse_models(VLLM_MODELS) == ModelInfo(model="tiny", max_model_len=4096, owned_by="vllm")


def test_lora_adapters_are_not_the_base_model() -> None:
    body = {
        "data": [
            {"id": "sql-lora", "parent": "tiny", "owned_by": "vllm", "max_model_len": 4096},
            {"id": "tiny", "parent": None, "owned_by": "vllm", "max_model_len": 4096},
        ]
    }

    assert parse_models(body).model == "tiny"


@pytest.mark.parametrize("body", [None, [], {"data": []}, {"data": "x"}, {"object": "list"}, {"data": [{"x": 1}]}])
def test_bad_model_lists(body: Any) -> None:
    with pytest.raises(ValueError):
        parse_models(body)


@pytest.mark.parametrize(
    ("owned_by", "version", "kind"),
    [
        ("vllm", {"version": "0.32.0"}, EngineKind.VLLM),
        ("vllm", None, EngineKind.VLLM),
        ("enginesim", {"version": "0.1.0"}, EngineKind.SIMULATOR),
        ("vllm", {"version": "0.32.0", "engine": "strata-enginesim"}, EngineKind.SIMULATOR),
        ("vllm", {"version": "0.1.0+enginesim"}, EngineKind.SIMULATOR),
    ],
)
def test_detect_kind(owned_by: str, version: Any, kind: EngineKind) -> None:
    assert detect_kind(ModelInfo("m", 10, owned_by), version) is kind


def test_hash_scheme_default_and_unknown() -> None:
    assert hash_scheme(None) is HashScheme.SHA256
    assert hash_scheme("xxhash_cbor") is HashScheme.XXHASH_CBOR
    with pytest.raises(DiscoveryIncomplete, match="sha256_msgpack"):
        hash_scheme("sha256_msgpack")


def test_registration_from_discovered_values() -> None:
    models = parse_models(VLLM_MODELS)

    reg = build_registration(
        spec(kv_events_endpoint="tcp://127.0.0.1:5557", labels={"zone": "a"}),
        models=models,
        cache=CACHE,
        kind=EngineKind.VLLM,
        agent_id="agent-1",
        heartbeat_ts=12.5,
    )

    assert (reg.model, reg.max_model_len, reg.block_size, reg.num_blocks) == ("tiny", 4096, 128, 4096)
    assert reg.hash_scheme is HashScheme.SHA256_CBOR
    assert reg.kind is EngineKind.VLLM
    assert reg.kv_events
    assert (reg.agent_id, reg.heartbeat_ts, reg.labels) == ("agent-1", 12.5, {"zone": "a"})


def test_overrides_win() -> None:
    overrides = spec(
        model="served",
        max_model_len=8192,
        block_size=16,
        hash_scheme="xxhash",
        num_blocks=10,
        kind="enginesim",
        hash_seed="0",
    )

    reg = build_registration(
        overrides, models=parse_models(VLLM_MODELS), cache=CACHE, kind=EngineKind.VLLM, agent_id="a", heartbeat_ts=0
    )

    assert (reg.model, reg.max_model_len, reg.block_size, reg.num_blocks) == ("served", 8192, 16, 10)
    assert (reg.hash_scheme, reg.kind, reg.hash_seed) == (HashScheme.XXHASH, EngineKind.SIMULATOR, "0")
    assert not reg.kv_events


def test_overrides_alone_are_enough() -> None:
    full = spec(model="m", max_model_len=100, block_size=16, hash_scheme="sha256")

    reg = build_registration(full, models=None, cache=None, kind=EngineKind.VLLM, agent_id="a", heartbeat_ts=0)

    assert reg.num_blocks is None


def test_missing_values_are_named() -> None:
    with pytest.raises(DiscoveryIncomplete, match="block_size, hash_scheme"):
        build_registration(
            spec(), models=parse_models(VLLM_MODELS), cache=None, kind=EngineKind.VLLM, agent_id="a", heartbeat_ts=0
        )


def test_cache_info_without_hash_label_means_vllm_default() -> None:
    cache = CacheConfig(block_size=16, num_gpu_blocks=None, hash_algo=None, prefix_caching=None)

    reg = build_registration(
        spec(), models=parse_models(VLLM_MODELS), cache=cache, kind=EngineKind.VLLM, agent_id="a", heartbeat_ts=0
    )

    assert reg.hash_scheme is HashScheme.SHA256
