"""Workload plans: when requests are sent and what they carry.

Arrival processes, rate patterns, length distributions and prompt sources, the builders
that combine them into ``list[PlannedRequest]``, and AIBrix workload files.
"""

from strata_bench.workloads.aibrix import (
    WorkloadEntry,
    WorkloadRequest,
    plan_from_workload,
    read_aibrix_workload,
    workload_from_plan,
    write_aibrix_workload,
)
from strata_bench.workloads.arrivals import ArrivalKind, ArrivalProcess, absolute_schedule, arrivals_for_rates
from strata_bench.workloads.builders import (
    plan_at_times,
    plan_constant_rate,
    plan_from_qps_series,
    plan_from_trace,
    plan_pattern,
    planned_request,
)
from strata_bench.workloads.lengths import (
    Fixed,
    LengthDistribution,
    LogNormal,
    Normal,
    Pareto,
    Uniform,
    length_distribution,
    sample_lengths,
)
from strata_bench.workloads.patterns import (
    SINE_PRESETS,
    SinePattern,
    exponential_ramp,
    linear_ramp,
    on_off,
    sine_from_pattern_file,
    sine_preset,
    with_bursts,
)
from strata_bench.workloads.prompts import CurvePrompts, DatasetPrompts, PromptSource, PromptSpec, SyntheticPrompts
from strata_bench.workloads.sessions import plan_sessions

__all__ = [
    "SINE_PRESETS",
    "ArrivalKind",
    "ArrivalProcess",
    "CurvePrompts",
    "DatasetPrompts",
    "Fixed",
    "LengthDistribution",
    "LogNormal",
    "Normal",
    "Pareto",
    "PromptSource",
    "PromptSpec",
    "SinePattern",
    "SyntheticPrompts",
    "Uniform",
    "WorkloadEntry",
    "WorkloadRequest",
    "absolute_schedule",
    "arrivals_for_rates",
    "exponential_ramp",
    "length_distribution",
    "linear_ramp",
    "on_off",
    "plan_at_times",
    "plan_constant_rate",
    "plan_from_qps_series",
    "plan_from_trace",
    "plan_from_workload",
    "plan_pattern",
    "plan_sessions",
    "planned_request",
    "read_aibrix_workload",
    "sample_lengths",
    "sine_from_pattern_file",
    "sine_preset",
    "with_bursts",
    "workload_from_plan",
    "write_aibrix_workload",
]
