"""The scenario file format (``version: 1``): a strict, typed description of one benchmark.

Loading is strict: an unknown key anywhere is an error naming the key and where it is
(``workload.qsp``); so is a missing or other ``version``. Times in ``workload`` are
**simulated seconds** (the fleet's clock); the runner divides them by ``fleet.time_scale``
to send and multiplies the measurements back, so reports read in simulated time.

Example (see ``defs/*.yaml`` for complete ones)::

    version: 1
    name: my-scenario
    description: what it shows
    fleet: {engines: 2, profile: llama-3.1-8b-h100, time_scale: 10, num_blocks: 2048}
    dataset:
      kind: prefix-sharing
      configs: [{prompt_length: 2000, shared_proportion: 0.9, num_samples_per_prefix: 8, num_prefix: 6}]
    workload: {qps: {start: 0.3, stop: 4.3, step: 0.5}, duration_s: 60, output_tokens: 32}
    strategies: [{name: random, kind: random}]
    quick: {qps: [0.8, 4.3], duration_s: 20}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DatasetSpec",
    "FleetSpec",
    "MultiturnSpec",
    "PrefixConfigSpec",
    "PrefixSharingSpec",
    "QpsSweep",
    "QuickSpec",
    "Scenario",
    "StrategySpec",
    "WorkloadSpec",
]

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetSpec(_Strict):
    """The simulated fleet the scenario starts (ignored when targets are given on the CLI)."""

    engines: int = Field(1, ge=1, le=64, description="Simulated engines.")
    profile: str = Field("tiny-cpu", description="Latency profile: a shipped name or a YAML path.")
    time_scale: float = Field(1.0, gt=0, description="Simulated seconds per wall-clock second.")
    prefix_caching: bool = Field(True, description="vLLM automatic prefix caching on the engines.")
    num_blocks: int | None = Field(None, gt=0, description="KV blocks per engine (default: the profile's).")
    block_size: int | None = Field(None, gt=0, description="KV block size (default: the profile's).")
    max_num_seqs: int | None = Field(None, gt=0, description="Sequences per step (default: the profile's).")
    restart: Literal["point", "strategy"] = Field(
        "point", description="Fresh fleet (cold caches) for every QPS point, or once per strategy."
    )


class PrefixConfigSpec(_Strict):
    """One AIBrix ``synthetic_shared`` configuration (token counts in the dataset tokenizer)."""

    prompt_length: int = Field(gt=0, description="Mean prompt length.")
    prompt_length_std: float = Field(0.0, ge=0, description="Its standard deviation.")
    shared_proportion: float = Field(ge=0, le=1, description="Mean fraction taken from the group prefix.")
    shared_proportion_std: float = Field(0.0, ge=0, description="Its standard deviation (fraction of the prompt).")
    num_samples_per_prefix: int = Field(gt=0, description="Prompts per prefix group.")
    num_prefix: int = Field(gt=0, description="Prefix groups.")


class PrefixSharingSpec(_Strict):
    """Controlled prefix sharing: requests draw prompts from the generated set."""

    kind: Literal["prefix-sharing"]
    tokenizer: str = Field("sim", description="'sim' or a local Hugging Face tokenizer directory.")
    seed: int = Field(0, description="Seeds the generated text.")
    configs: list[PrefixConfigSpec] = Field(min_length=1, description="Configurations, one set of groups each.")


class MultiturnSpec(_Strict):
    """Synthetic multi-turn chat sessions (AIBrix ``synthetic_multiturn``); history is resent."""

    kind: Literal["multiturn"]
    tokenizer: str = Field("sim", description="'sim' or a local Hugging Face tokenizer directory.")
    seed: int = Field(0, description="Seeds the generated text.")
    sessions: int = Field(gt=0, description="Sessions in the set (reused in order when a point needs more).")
    turns_mean: float = Field(gt=0, description="Mean user turns per session.")
    turns_std: float = Field(0.0, ge=0, description="Its standard deviation.")
    prompt_length_mean: float = Field(gt=0, description="Mean user-turn length (Pareto).")
    prompt_length_std: float = Field(gt=0, description="Its standard deviation.")
    shared_prefix_len: int = Field(0, ge=0, description="Common text before every first turn.")


DatasetSpec = Annotated[PrefixSharingSpec | MultiturnSpec, Field(discriminator="kind")]


class QpsSweep(_Strict):
    """``start, start+step, ...`` up to `stop` inclusive."""

    start: float = Field(gt=0)
    stop: float = Field(gt=0)
    step: float = Field(gt=0)

    def points(self) -> list[float]:
        """The rates of the sweep (rounded to 6 decimals)."""
        count = int((self.stop - self.start) / self.step + 1e-9) + 1
        return [round(self.start + i * self.step, 6) for i in range(count)]


Rates = Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] | QpsSweep


class WorkloadSpec(_Strict):
    """Open-loop arrivals swept over request rates; times in simulated seconds."""

    qps: Rates = Field(description="Request rates: a list or {start, stop, step}.")
    duration_s: float = Field(gt=0, description="Measured arrivals per point span this long.")
    ramp_s: float = Field(
        0.0, ge=0, description="Unmeasured arrivals before the measured window (reach steady state first)."
    )
    drain_s: float = Field(60.0, ge=0, description="After the last arrival, in-flight requests get this long.")
    arrival: Literal["poisson", "gamma", "constant"] = "poisson"
    burstiness: float = Field(1.0, gt=0, description="Gamma shape (gamma only).")
    output_tokens: int = Field(128, gt=0, description="max_tokens of every request (ignore_eos is sent).")
    api: Literal["chat", "completions"] = Field("completions", description="Multi-turn needs chat.")
    order: Literal["random", "cycle"] = Field("random", description="How prompts are drawn from the set.")
    think_time_s: float | dict[str, Any] = Field(
        0.0, description="Pause before later turns: a number or a length distribution {kind, ...}."
    )
    warmup_per_group: int = Field(0, ge=0, description="Prompts per prefix group sent (unmeasured) before a point.")
    timeout_s: float = Field(600.0, gt=0, description="Per-request limit.")
    seed: int = Field(0, description="Seeds arrivals and prompt draws.")
    slo: str = Field("", description="Goodput objectives in ms, e.g. 'ttft:2000'.")

    def rates(self) -> list[float]:
        """The QPS points in order."""
        return self.qps.points() if isinstance(self.qps, QpsSweep) else list(self.qps)


class StrategySpec(_Strict):
    """How requests reach the engines.

    ``random`` / ``round-robin``: the client spreads units (a request, or a whole session)
    over the engines itself. ``gateway``: everything goes to the gateway URL given on the
    command line with header ``routing-strategy: <routing_strategy>``; skipped without one.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Label in tables and run directories.")
    kind: Literal["random", "round-robin", "gateway"]
    routing_strategy: str | None = Field(None, description="Header value for kind=gateway.")

    @model_validator(mode="after")
    def _header_for_gateway(self) -> StrategySpec:
        if (self.kind == "gateway") != (self.routing_strategy is not None):
            raise ValueError("routing_strategy is required for kind=gateway and only allowed there")
        return self


class QuickSpec(_Strict):
    """What ``--quick`` changes (defaults: first and last rate, ~2 wall seconds per point)."""

    qps: list[Annotated[float, Field(gt=0)]] | None = None
    duration_s: float | None = Field(None, gt=0)
    drain_s: float | None = Field(None, ge=0)
    think_time_s: float | dict[str, Any] | None = Field(None, description="Multi-turn: think time.")
    sessions: int | None = Field(None, gt=0, description="Multi-turn: sessions generated.")
    num_prefix_scale: float | None = Field(None, gt=0, le=1, description="Prefix sharing: fraction of groups kept.")


class Scenario(_Strict):
    """A whole scenario file."""

    version: Literal[1] = Field(description="Schema version of this file.")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    scaling: str = Field("", description="How the scenario maps a published setup onto the simulator.")
    fleet: FleetSpec = Field(default_factory=FleetSpec)
    dataset: DatasetSpec
    workload: WorkloadSpec
    strategies: list[StrategySpec] = Field(
        default_factory=lambda: [StrategySpec(name="random", kind="random")], min_length=1
    )
    quick: QuickSpec = Field(default_factory=QuickSpec)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        names = [s.name for s in self.strategies]
        if len(set(names)) != len(names):
            raise ValueError(f"strategy names must be unique: {names}")
        if isinstance(self.dataset, MultiturnSpec) and self.workload.api != "chat":
            raise ValueError("a multiturn dataset needs workload.api: chat")
        return self
