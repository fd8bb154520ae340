"""Engine plane: load snapshots and the engine registry."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AnyHttpUrl, Field

from strata_contracts.messages.base import Contract

__all__ = ["EngineKind", "EngineLoad", "EngineRegistration", "HashScheme"]


class HashScheme(StrEnum):
    """vLLM's `--prefix-caching-hash-algo` values an engine may run with."""

    SHA256 = "sha256"
    SHA256_CBOR = "sha256_cbor"
    XXHASH = "xxhash"
    XXHASH_CBOR = "xxhash_cbor"


class EngineKind(StrEnum):
    """What serves behind an engine URL."""

    VLLM = "vllm"
    SIMULATOR = "enginesim"


class EngineLoad(Contract):
    """`strata.engine.v1.load.<engine>`: one load snapshot, every 50-100 ms."""

    engine_id: str = Field(description="Engine id, the same as in the registry.")
    seq: int = Field(ge=0, description="Per-agent counter; a reset means the agent restarted.")
    ts: float = Field(description="Unix time (s) the engine metrics were scraped.")
    running: int = Field(ge=0, description="vllm:num_requests_running.")
    waiting: int = Field(ge=0, description="vllm:num_requests_waiting.")
    kv_usage: float = Field(ge=0.0, le=1.0, description="vllm:kv_cache_usage_perc (0-1).")
    prompt_tps: float = Field(ge=0.0, description="Prompt tokens/s since the previous snapshot.")
    generation_tps: float = Field(ge=0.0, description="Generated tokens/s since the previous snapshot.")
    prefix_hit_rate: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Prefix-cache hits/queries since the previous snapshot."
    )
    preemptions: int = Field(default=0, ge=0, description="Preemptions since the previous snapshot.")
    healthy: bool = Field(default=True, description="False when the last scrape or health probe failed.")


class EngineRegistration(Contract):
    """Value of key `<engine>` in the registry bucket; refreshed as a heartbeat."""

    engine_id: str = Field(description="Fleet-unique engine id (a NATS subject token).")
    url: AnyHttpUrl = Field(description="Base URL of the engine's OpenAI-compatible server.")
    model: str = Field(description="Served model name (what clients put in `model`).")
    kind: EngineKind = Field(default=EngineKind.VLLM, description="Real vLLM or the simulator.")
    max_model_len: int = Field(gt=0, description="Longest prompt + completion the engine accepts.")
    block_size: int = Field(gt=0, description="KV-cache block size in tokens.")
    hash_scheme: HashScheme = Field(description="Prefix-cache block hash algorithm.")
    hash_seed: str | None = Field(
        default=None, description="PYTHONHASHSEED of the engine, when known; None = random per process."
    )
    num_blocks: int | None = Field(default=None, gt=0, description="KV-cache blocks on the engine.")
    kv_events: bool = Field(default=False, description="Whether KV events are republished for it.")
    agent_id: str = Field(description="Id of the engine agent that registered it.")
    heartbeat_ts: float = Field(description="Unix time (s) of the latest heartbeat.")
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form labels (zone, GPU, pool).")
