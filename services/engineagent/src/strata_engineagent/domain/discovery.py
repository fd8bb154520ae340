"""What an engine says about itself, turned into an EngineRegistration.

Sources, each overridable per engine in the settings:

* `GET /v1/models`: served model id (the first entry without a `parent`; LoRA adapters
  have one) and `max_model_len`; `owned_by` names the server.
* `GET /metrics`, info gauge `vllm:cache_config_info`: `block_size`, `num_gpu_blocks`,
  `prefix_caching_hash_algo` (absent on builds older than the label: vLLM's default,
  `sha256`, is assumed).
* `GET /version`: `{"version": "0.32.0"}` on vLLM; the simulator is recognised when
  `owned_by` or any string in the version document mentions `enginesim`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from strata_contracts.messages import EngineKind, EngineRegistration, HashScheme
from strata_engineagent.domain.load import CacheConfig
from strata_engineagent.domain.spec import EngineSpec

__all__ = ["DiscoveryIncomplete", "ModelInfo", "build_registration", "detect_kind", "hash_scheme", "parse_models"]

_DEFAULT_HASH_ALGO: Final = "sha256"
_SIMULATOR_MARK: Final = "enginesim"


class DiscoveryIncomplete(ValueError):
    """A registration field is neither discoverable from the engine nor overridden."""


@dataclass(frozen=True)
class ModelInfo:
    """The base model an engine serves, from `/v1/models`."""

    model: str
    max_model_len: int | None
    owned_by: str | None


def parse_models(body: Any) -> ModelInfo:
    """Read the base model out of a `/v1/models` response body.

    Raises:
        ValueError: the body is not an OpenAI model list or lists no model.
    """
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        raise ValueError("not an OpenAI model list (no `data` array)")
    models = [entry for entry in data if isinstance(entry, Mapping) and isinstance(entry.get("id"), str)]
    if not models:
        raise ValueError("the engine lists no model")
    base = next((entry for entry in models if not entry.get("parent")), models[0])
    max_len = base.get("max_model_len")
    owned_by = base.get("owned_by")
    return ModelInfo(
        model=str(base["id"]),
        max_model_len=max_len if isinstance(max_len, int) and max_len > 0 else None,
        owned_by=owned_by if isinstance(owned_by, str) else None,
    )


def detect_kind(models: ModelInfo | None, version: Any) -> EngineKind:
    """vLLM unless `owned_by` or a string in the `/version` document names the simulator."""
    if models and models.owned_by and _SIMULATOR_MARK in models.owned_by.lower():
        return EngineKind.SIMULATOR
    if isinstance(version, Mapping):
        for value in version.values():
            if isinstance(value, str) and _SIMULATOR_MARK in value.lower():
                return EngineKind.SIMULATOR
    return EngineKind.VLLM


def hash_scheme(algo: str | None) -> HashScheme:
    """The HashScheme of a `prefix_caching_hash_algo` label value (None = vLLM's default).

    Raises:
        DiscoveryIncomplete: a value Strata's contracts cannot express.
    """
    value = algo or _DEFAULT_HASH_ALGO
    try:
        return HashScheme(value)
    except ValueError:
        known = ", ".join(scheme.value for scheme in HashScheme)
        raise DiscoveryIncomplete(f"hash algorithm {value!r} is not supported (known: {known})") from None


def build_registration(
    spec: EngineSpec,
    *,
    models: ModelInfo | None,
    cache: CacheConfig | None,
    kind: EngineKind,
    agent_id: str,
    heartbeat_ts: float,
) -> EngineRegistration:
    """The registration of `spec`'s engine: overrides first, then discovered values.

    Raises:
        DiscoveryIncomplete: model, max_model_len, block size or hash scheme is unknown.
    """
    model = spec.model or (models.model if models else None)
    max_len = spec.max_model_len or (models.max_model_len if models else None)
    block_size = spec.block_size or (cache.block_size if cache else None)
    missing = [
        name
        for name, value in (("model", model), ("max_model_len", max_len), ("block_size", block_size))
        if value is None
    ]
    if spec.hash_scheme is None and cache is None:
        missing.append("hash_scheme")
    if missing:
        unknown = ", ".join(missing)
        raise DiscoveryIncomplete(f"engine {spec.engine_id}: unknown {unknown} (not discovered, no override)")
    scheme = spec.hash_scheme or hash_scheme(cache.hash_algo if cache else None)
    return EngineRegistration(
        engine_id=spec.engine_id,
        url=spec.url,
        model=str(model),
        kind=spec.kind or kind,
        max_model_len=int(max_len or 0),
        block_size=int(block_size or 0),
        hash_scheme=scheme,
        hash_seed=spec.hash_seed,
        num_blocks=spec.num_blocks or (cache.num_gpu_blocks if cache else None),
        kv_events=spec.kv_events_endpoint is not None,
        agent_id=agent_id,
        heartbeat_ts=heartbeat_ts,
        labels=dict(spec.labels),
    )
