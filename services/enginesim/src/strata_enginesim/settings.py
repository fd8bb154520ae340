"""Settings of the engine simulator (`STRATA_ENGINESIM_*`, or the matching `--flags`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from strata_contracts.messages import HashScheme
from strata_contracts.vllm_kv_events import WireShape
from strata_enginesim.domain.latency import load_profile
from strata_runtime.settings import ServiceSettings, service_config

__all__ = ["FLAGS", "EngineSimSettings"]


class EngineSimSettings(ServiceSettings):
    """One process running `engines` independent simulated vLLM engines."""

    model_config = service_config("enginesim")

    engines: int = Field(default=1, ge=1, le=256, description="Independent engines in this process.")
    base_port: int = Field(
        default=0, ge=0, lt=65536, description="Engine i serves HTTP on base_port + i (0 = a free port each)."
    )
    profile: str = Field(default="tiny-cpu", description="Latency profile: a shipped name or a YAML path.")
    served_model_name: str = Field(default="tiny", description="Model id the engines serve.")
    engine_id_prefix: str = Field(default="sim", description="Engine ids are <prefix>-<i>.")
    block_size: int | None = Field(default=None, gt=0, description="KV block size (default: the profile's).")
    num_blocks: int | None = Field(default=None, gt=0, description="KV blocks per engine (default: the profile's).")
    max_num_seqs: int | None = Field(default=None, gt=0, description="Sequences per step (default: profile).")
    max_num_batched_tokens: int | None = Field(default=None, gt=0, description="Tokens per step (default: profile).")
    max_model_len: int | None = Field(default=None, gt=0, description="Context length (default: profile).")
    enable_prefix_caching: bool = Field(default=True, description="vLLM automatic prefix caching.")
    hash_scheme: HashScheme = Field(default=HashScheme.SHA256, description="--prefix-caching-hash-algo.")
    hash_seed: str | None = Field(default=None, description="The engines' PYTHONHASHSEED (None: vLLM's default).")
    time_scale: float = Field(default=1.0, gt=0, description="Simulated seconds per wall-clock second.")
    eos_probability: float = Field(default=0.0, ge=0, le=1, description="Chance per token of EOS (w/o ignore_eos).")
    kv_events: bool = Field(default=True, description="Publish vLLM KV events over ZMQ.")
    kv_events_shape: WireShape = Field(default=WireShape.MIXED, description="KV-event wire shape.")
    kv_events_base_port: int = Field(
        default=0, ge=0, lt=65536, description="Engine i: PUB on base + 2i, replay on base + 2i + 1 (0 = free ports)."
    )
    enable_prompt_tokens_details: bool = Field(default=True, description="Report cached_tokens in usage.")
    force_include_usage: bool = Field(default=False, description="Always send the final usage chunk.")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        load_profile(value)  # raises ValueError naming the shipped profiles
        return value


FLAGS = ("engines", "base_port", "profile", "served_model_name", "time_scale", "num_blocks", "block_size", "host")
