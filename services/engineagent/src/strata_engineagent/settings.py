"""Settings of the engine agent: environment variables `STRATA_ENGINEAGENT_*`.

One agent process serves a list of engines (`STRATA_ENGINEAGENT_ENGINES`, JSON). What the
engine can tell about itself (model, max_model_len, block size, hash scheme, block count,
vLLM or simulator) is discovered from its HTTP surface; any field set here wins.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from strata_engineagent.domain.spec import EngineSpec
from strata_runtime import ServiceSettings, service_config

__all__ = ["EngineAgentSettings", "EngineSpec"]


class EngineAgentSettings(ServiceSettings):
    """Settings of `python -m strata_engineagent`."""

    model_config = service_config("engineagent")

    engines: Annotated[list[EngineSpec], NoDecode] = Field(
        default_factory=list,
        description=(
            "JSON list of engines: {engine_id, url, kv_events_endpoint?, kv_events_bind?, kv_replay_endpoint?, "
            "kv_topic?, model?, max_model_len?, block_size?, hash_scheme?, hash_seed?, num_blocks?, kind?, labels?}."
        ),
    )
    agent_id: str = Field(default="", description="Agent id in registrations (default: instance_id, else host-pid).")
    scrape_interval_ms: int = Field(default=75, ge=10, le=1000, description="Period of /metrics scrapes per engine.")
    scrape_timeout_ms: int = Field(default=250, ge=10, le=10_000, description="Timeout of one /metrics scrape.")
    discovery_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="Timeout of the /v1/models and /version requests."
    )
    heartbeat_interval_s: float = Field(default=2.0, gt=0, le=60, description="Period of registry heartbeats.")
    registry_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "A registration older than this is stale; the agent deletes the key of an engine it could not "
            "scrape for this long and puts it back on recovery. Must exceed heartbeat_interval_s."
        ),
    )
    kv_replay_timeout_s: float = Field(default=2.0, gt=0, le=60, description="Deadline of one KV-event replay.")
    kv_publish_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="How long one KV batch publish is retried before a resync."
    )

    @field_validator("engines", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        # Decoded here, not by pydantic-settings, so that bad JSON is a validation
        # error that names the variable instead of a traceback.
        if isinstance(value, str | bytes):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
        return value

    @field_validator("engines")
    @classmethod
    def _unique_ids(cls, engines: list[EngineSpec]) -> list[EngineSpec]:
        seen: set[str] = set()
        for spec in engines:
            if spec.engine_id in seen:
                raise ValueError(f"engine id {spec.engine_id!r} appears twice")
            seen.add(spec.engine_id)
        return engines

    @field_validator("registry_ttl_s")
    @classmethod
    def _ttl_exceeds_heartbeat(cls, ttl: float, info: ValidationInfo) -> float:
        heartbeat = info.data.get("heartbeat_interval_s")
        if heartbeat is not None and ttl <= heartbeat:
            raise ValueError(f"must exceed heartbeat_interval_s ({heartbeat})")
        return ttl
