"""One engine's entry in the agent's settings (plain data; used by settings and domain alike)."""

from __future__ import annotations

from typing import Self

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from strata_contracts import subjects
from strata_contracts.messages import EngineKind, HashScheme

__all__ = ["EngineSpec"]

_ZMQ_SCHEMES = ("tcp://", "ipc://", "inproc://")


class EngineSpec(BaseModel):
    """One engine the agent watches (an entry of `STRATA_ENGINEAGENT_ENGINES`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine_id: str = Field(description="Fleet-unique engine id (one NATS subject token).")
    url: AnyHttpUrl = Field(description="Base URL of the engine's OpenAI-compatible server.")
    kv_events_endpoint: str | None = Field(
        default=None, description="ZMQ endpoint of the engine's KV-event PUB socket (None = no KV events)."
    )
    kv_events_bind: bool = Field(
        default=False,
        description="Bind the SUB socket instead of connecting (needed when the engine's PUB connects).",
    )
    kv_replay_endpoint: str | None = Field(default=None, description="ZMQ endpoint of the engine's replay ROUTER.")
    kv_topic: str = Field(default="", description="Topic prefix to subscribe to ('' = every topic).")
    model: str | None = Field(default=None, description="Override: served model name.")
    max_model_len: int | None = Field(default=None, gt=0, description="Override: longest sequence.")
    block_size: int | None = Field(default=None, gt=0, description="Override: KV block size in tokens.")
    hash_scheme: HashScheme | None = Field(default=None, description="Override: prefix-caching hash algorithm.")
    hash_seed: str | None = Field(default=None, description="PYTHONHASHSEED of the engine, when known.")
    num_blocks: int | None = Field(default=None, gt=0, description="Override: KV-cache blocks on the engine.")
    kind: EngineKind | None = Field(default=None, description="Override: vllm or enginesim (default: detected).")
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form registry labels.")

    @field_validator("engine_id")
    @classmethod
    def _engine_id_is_token(cls, value: str) -> str:
        # token() admits exactly what is both a subject token and a registry (KV) key.
        return subjects.token(value, "engine id")

    @field_validator("kv_events_endpoint", "kv_replay_endpoint")
    @classmethod
    def _zmq_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_ZMQ_SCHEMES):
            raise ValueError(f"{value!r} is not a ZMQ endpoint (tcp://, ipc:// or inproc://)")
        return value

    @model_validator(mode="after")
    def _replay_needs_events(self) -> Self:
        if self.kv_replay_endpoint and not self.kv_events_endpoint:
            raise ValueError(f"engine {self.engine_id}: kv_replay_endpoint without kv_events_endpoint")
        return self
