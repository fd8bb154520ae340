"""Scenario → dataset → plans: what each QPS point sends (times in simulated seconds).

* ``prefix-sharing``: one prompt set (AIBrix ``synthetic_shared``); every point draws its
  prompts from it (``workload.order``): ``round(qps * duration_s)`` Poisson/gamma/constant
  arrivals rescaled so the last lands at ``n / qps`` (vLLM's normalisation: the offered
  rate is the nominal one, not one random realisation of it). Warm-up: the first
  ``warmup_per_group`` prompts of every group.
* ``multiturn``: synthetic sessions whose turns are chat requests carrying the history.
  `qps` counts **requests**: ``round(rate * duration_s)`` sessions arrive at
  ``rate = qps / mean turns per session``; they are taken from the set in order (wrapping, with fresh ids, so a reused
  conversation is a new session to the engines' caches only if it was evicted meanwhile).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from strata_bench.datasets import (
    MultiturnConfig,
    PrefixSharingConfig,
    SessionEntry,
    SharedPromptEntry,
    generate_multiturn,
    generate_prefix_sharing,
    write_dataset,
)
from strata_bench.model import PlannedRequest
from strata_bench.scenarios.schema import MultiturnSpec, PrefixSharingSpec, Scenario, WorkloadSpec
from strata_bench.tokenizer import BenchTokenizer, load_tokenizer
from strata_bench.workloads import (
    ArrivalProcess,
    DatasetPrompts,
    Fixed,
    LengthDistribution,
    PromptSpec,
    length_distribution,
    plan_constant_rate,
    plan_sessions,
    planned_request,
)

__all__ = ["PreparedDataset", "build_plan", "build_warmup", "prepare_dataset", "think_time"]

_WARMUP_INDEX = 1_000_000  # warm-up requests are numbered apart from the measured ones


@dataclass
class PreparedDataset:
    """A generated dataset.

    Attributes:
        tokenizer: the tokenizer its lengths are exact in.
        prompts: prefix-sharing prompts (grouped by config, then group), or empty.
        sessions: multi-turn sessions, or empty.
        stats: footprint numbers for the report (tokens, prefix-sharing ratio, ...).
    """

    tokenizer: BenchTokenizer
    prompts: list[SharedPromptEntry] = field(default_factory=list)
    sessions: list[SessionEntry] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> int:
        """Write the set as AIBrix-compatible JSONL; returns the number of lines."""
        return write_dataset(self.prompts or self.sessions, path)


def prepare_dataset(spec: PrefixSharingSpec | MultiturnSpec) -> PreparedDataset:
    """Generate the scenario's dataset (deterministic for a given seed)."""
    tokenizer = load_tokenizer(spec.tokenizer)
    if isinstance(spec, PrefixSharingSpec):
        configs = [PrefixSharingConfig(**c.model_dump()) for c in spec.configs]
        generated = generate_prefix_sharing(tokenizer, configs, seed=spec.seed)
        unique = sum(_unique_tokens(generated.entries, config_id=i) for i in range(len(configs)))
        stats = {**generated.stats["overall"], "unique_tokens": unique}
        return PreparedDataset(tokenizer, prompts=generated.entries, stats=stats)
    config = MultiturnConfig(
        num_sessions_mean=spec.sessions,
        num_sessions_std=0,
        num_turns_mean=spec.turns_mean,
        num_turns_std=spec.turns_std,
        prompt_length_mean=spec.prompt_length_mean,
        prompt_length_std=spec.prompt_length_std,
        shared_prefix_len=spec.shared_prefix_len,
    )
    sessions = generate_multiturn(tokenizer, config, seed=spec.seed)
    turns = [len(s.prompts) for s in sessions]
    user_tokens = sum(len(tokenizer.encode(p)) for s in sessions for p in s.prompts)
    stats = {"sessions": len(sessions), "turns": sum(turns), "user_tokens": user_tokens}
    return PreparedDataset(tokenizer, sessions=sessions, stats=stats)


def _unique_tokens(entries: list[SharedPromptEntry], *, config_id: int) -> int:
    """Distinct KV tokens of one config: per group its longest shared prefix plus every suffix."""
    groups: dict[int, list[SharedPromptEntry]] = {}
    for e in entries:
        if e.config_id == config_id:
            groups.setdefault(e.prefix_group, []).append(e)
    total = 0
    for members in groups.values():
        total += max(e.shared_tokens or 0 for e in members)
        total += sum(e.token_count - (e.shared_tokens or 0) for e in members)
    return total


def think_time(spec: float | Mapping[str, Any]) -> LengthDistribution:
    """A think-time distribution in seconds (a number is fixed; minimum 0, not 1)."""
    if isinstance(spec, int | float):
        return Fixed(float(spec), minimum=0)
    return length_distribution({"minimum": 0, **spec})


def build_plan(scenario: Scenario, dataset: PreparedDataset, qps: float) -> list[PlannedRequest]:
    """The plan of one QPS point: ``ramp_s + duration_s`` of arrivals (the runner measures
    only requests scheduled from ``ramp_s`` on)."""
    w = scenario.workload
    if dataset.prompts:
        source = DatasetPrompts(
            dataset.prompts, dataset.tokenizer, output_lengths=Fixed(w.output_tokens), order=w.order
        )
        return plan_constant_rate(
            source,
            qps,
            num_requests=max(1, round(qps * (w.ramp_s + w.duration_s))),
            rescale=True,
            kind=w.arrival,
            burstiness=w.burstiness,
            seed=w.seed,
            chat=w.api == "chat",
        )
    return _session_plan(w, dataset.sessions, qps)


def _session_plan(w: WorkloadSpec, sessions: list[SessionEntry], qps: float) -> list[PlannedRequest]:
    mean_turns = sum(len(s.prompts) for s in sessions) / len(sessions)
    process = ArrivalProcess(qps / mean_turns, w.arrival, w.burstiness)
    count = max(1, round(process.rate * (w.ramp_s + w.duration_s)))
    chosen = [replace(sessions[i % len(sessions)], session_id=i) for i in range(count)]
    return plan_sessions(
        chosen,
        session_arrivals=process,
        think_time_s=think_time(w.think_time_s),
        output_lengths=Fixed(w.output_tokens),
        seed=w.seed,
    )


def build_warmup(scenario: Scenario, dataset: PreparedDataset) -> list[PlannedRequest]:
    """Unmeasured requests sent before each point: the first ``warmup_per_group`` prompts of
    every prefix group (none for multi-turn sets)."""
    per_group = scenario.workload.warmup_per_group
    if not per_group or not dataset.prompts:
        return []
    taken: dict[tuple[int, int], int] = {}
    chat = scenario.workload.api == "chat"
    out: list[PlannedRequest] = []
    for e in dataset.prompts:
        key = (e.config_id, e.prefix_group)
        if taken.get(key, 0) < per_group:
            taken[key] = taken.get(key, 0) + 1
            spec = PromptSpec(e.prompt, scenario.workload.output_tokens, e.token_count, e.prefix_group)
            out.append(planned_request(_WARMUP_INDEX + len(out), 0.0, spec, chat=chat))
    return out
