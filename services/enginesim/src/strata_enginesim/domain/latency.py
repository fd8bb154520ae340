"""Step-time model of a vLLM engine: how long one scheduler step takes.

One step runs every scheduled request once: prefill chunks (many new tokens each) and
decodes (one new token each). On a GPU a step is bound either by memory traffic (all
weights read once, plus every context token's KV read by attention) or by compute
(a matmul per new token, plus attention over new-token x context-token pairs)::

    step_s = overhead_s + per_seq_s * sequences + max(mem_s, compute_s)
    mem_s     = weight_read_s + kv_read_s_per_token * context_tokens
    compute_s = per_token_s * new_tokens + per_pair_s * attention_pairs

`context_tokens` = KV tokens attention reads this step (sum of every scheduled request's
context), `new_tokens` = prefill tokens + decode sequences, `attention_pairs` = sum over
scheduled requests of new tokens x (context before them + half of the new tokens).
The coefficients of each model/hardware profile are derived in its YAML file.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EngineShape", "LatencyProfile", "StepWork", "available_profiles", "load_profile"]


@dataclass(frozen=True, slots=True)
class StepWork:
    """What one scheduler step computes (the latency model's input)."""

    prefill_tokens: int = 0
    decode_seqs: int = 0
    context_tokens: int = 0
    attention_pairs: float = 0.0
    loaded_tokens: int = 0  # prefix tokens brought in from an offload tier this step
    num_seqs: int = 0  # requests scheduled in the step (prefill chunks and decodes)


class StepCoefficients(BaseModel):
    """Coefficients of the step-time formula (seconds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    overhead_s: float = Field(ge=0, description="Fixed per-step cost (scheduling, launches, sampling).")
    weight_read_s: float = Field(ge=0, description="Reading every weight once (memory floor of a step).")
    kv_read_s_per_token: float = Field(ge=0, description="Reading one context token's KV in attention.")
    per_token_s: float = Field(ge=0, description="Dense compute per new token (2 x parameters FLOPs).")
    per_pair_s: float = Field(ge=0, description="Attention compute per (new token, context token) pair.")
    per_seq_s: float = Field(
        default=0.0, ge=0, description="Per scheduled sequence per step (sampling, detokenizing, bookkeeping)."
    )
    frontend_s: float = Field(
        default=0.0, ge=0, description="Per-request delay before scheduling (API server to engine core hop)."
    )


class EngineShape(BaseModel):
    """Engine configuration the profile was derived for (overridable on the command line)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    block_size: int = Field(gt=0, description="KV block size in tokens.")
    num_blocks: int = Field(gt=0, description="KV blocks that fit next to the weights.")
    max_num_seqs: int = Field(gt=0, description="Concurrent sequences per step.")
    max_num_batched_tokens: int = Field(gt=0, description="Token budget per step.")
    max_model_len: int = Field(gt=0, description="Longest prompt + completion.")
    kv_bytes_per_token: int = Field(gt=0, description="KV bytes one token occupies (for offload sizing).")


class LatencyProfile(BaseModel):
    """A model on a hardware setup: engine shape and step-time coefficients."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Profile id (file name without .yaml).")
    model: str = Field(description="Model the profile describes.")
    hardware: str = Field(description="Accelerator(s), e.g. 'H100-80GB SXM x4 (TP4)'.")
    engine: EngineShape
    step: StepCoefficients
    sources: list[str] = Field(default_factory=list, description="Where the numbers come from.")
    derivation: str = Field(default="", description="How the coefficients were obtained.")

    def step_time(self, work: StepWork) -> float:
        """Seconds one step with `work` takes."""
        c = self.step
        new_tokens = work.prefill_tokens + work.decode_seqs
        if new_tokens == 0:
            return 0.0
        mem = c.weight_read_s + c.kv_read_s_per_token * work.context_tokens
        compute = c.per_token_s * new_tokens + c.per_pair_s * work.attention_pairs
        return c.overhead_s + c.per_seq_s * work.num_seqs + max(mem, compute)


def _profile_dir() -> Path:
    return Path(str(resources.files("strata_enginesim") / "profiles"))


def available_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in _profile_dir().glob("*.yaml"))


def load_profile(name_or_path: str) -> LatencyProfile:
    """Load a shipped profile by name, or a YAML file by path.

    Raises:
        ValueError: unknown profile name (the message lists the shipped ones) or invalid file.
    """
    shipped = _profile_dir() / f"{name_or_path}.yaml"
    path = shipped if shipped.exists() else Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"unknown latency profile {name_or_path!r}; shipped: {', '.join(available_profiles())}")
    data = yaml.safe_load(path.read_text())
    return LatencyProfile.model_validate({"name": path.stem, **data})
