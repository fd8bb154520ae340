"""Named, versioned benchmark scenarios: YAML in ``defs/``, run end to end.

``strata-bench scenario seed-workload-1 [--quick]`` = start a simulated fleet → generate
the dataset → build one plan per QPS point → send it (per strategy) → analyse → write run
directories, ``summary.json``/``summary.md`` and ``sweep.png``.
"""

from strata_bench.scenarios.build import PreparedDataset, build_plan, build_warmup, prepare_dataset
from strata_bench.scenarios.contenders import Connect, Contender, ContenderRun, contenders_report, run_contenders
from strata_bench.scenarios.loader import (
    DEFS_DIR,
    LoadedScenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
    quick_variant,
    scenario_names,
)
from strata_bench.scenarios.report import PointRow, plot_cdf_compare, plot_sweep, ratio_table, sweep_table
from strata_bench.scenarios.runner import (
    ScenarioOptions,
    ScenarioResult,
    fleet_config,
    run_scenario,
    send_blocking,
    write_run,
)
from strata_bench.scenarios.schema import Scenario
from strata_bench.scenarios.targets import Outcome, PlanSender, SendOptions, Target

__all__ = [
    "DEFS_DIR",
    "Connect",
    "Contender",
    "ContenderRun",
    "LoadedScenario",
    "Outcome",
    "PlanSender",
    "PointRow",
    "PreparedDataset",
    "Scenario",
    "ScenarioError",
    "ScenarioOptions",
    "ScenarioResult",
    "SendOptions",
    "Target",
    "build_plan",
    "build_warmup",
    "contenders_report",
    "fleet_config",
    "load_scenario",
    "parse_scenario",
    "plot_cdf_compare",
    "plot_sweep",
    "prepare_dataset",
    "quick_variant",
    "ratio_table",
    "run_contenders",
    "run_scenario",
    "scenario_names",
    "send_blocking",
    "sweep_table",
    "write_run",
]
