"""The benchmark part of ``make demo``: prefix caching ON vs OFF on a simulated fleet (~15 s).

    shared-prefix dataset (8 groups x 16 prompts, 1,500 tokens, 80 % shared)
      └─ one Poisson plan (8 req/s for 20 simulated s), spread randomly over 4 engines by the client
           ├─ fleet with prefix caching OFF ─▶ run dir cache-off/   (baseline)
           └─ fleet with prefix caching ON  ─▶ run dir cache-on/
      └─ table: TTFT/TPOT/E2E p50/p99, prefix-hit ratio, throughput, ON / OFF ratios; CDF PNG

Both runs send the identical plan to identical fleets (fresh, cold caches) that differ
only in ``STRATA_ENGINESIM_ENABLE_PREFIX_CACHING``. Latencies are simulated milliseconds
(Llama-3.1-8B on A100 roofline profile, time scale 5).

Entry points: :func:`main` (prints everything, returns the exit code: what ``strata demo``
calls after the cluster demo), :func:`run_demo` (returns the numbers), ``strata-bench demo``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strata_bench.analysis import Summary
from strata_bench.scenarios import parse_scenario, prepare_dataset
from strata_bench.scenarios.contenders import Contender, contenders_report, run_contenders
from strata_bench.scenarios.report import plot_cdf_compare

if TYPE_CHECKING:
    from strata_bench.cli import Subparsers

__all__ = ["DEMO_SCENARIO", "DemoResult", "add_demo", "main", "run_demo"]

DEMO_SCENARIO: dict[str, Any] = {
    "version": 1,
    "name": "demo-prefix-caching",
    "description": "Prefix caching ON vs OFF, shared-prefix prompts spread randomly over 4 engines.",
    "fleet": {"engines": 4, "profile": "llama-3.1-8b-a100", "time_scale": 5},
    "dataset": {
        "kind": "prefix-sharing",
        "seed": 11,
        "configs": [{"prompt_length": 1500, "shared_proportion": 0.8, "num_samples_per_prefix": 16, "num_prefix": 8}],
    },
    "workload": {"qps": [8], "duration_s": 20, "drain_s": 20, "output_tokens": 32, "seed": 11},
}
"""The demo as a (schema-valid) scenario; ``run_demo`` runs it once per caching mode."""

_PLOT_TITLE = "prefix caching OFF vs ON (simulated ms)"


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured and wrote.

    Attributes:
        out_dir: the demo's result directory (``cache-off/``, ``cache-on/``, the PNG).
        summaries: ``{"cache OFF": ..., "cache ON": ...}``.
        table: the Markdown comparison (OFF is the baseline) and a status line per run.
        png: TTFT/TPOT/E2E CDFs of both runs.
        seconds: wall time of the whole demo.
    """

    out_dir: Path
    summaries: dict[str, Summary]
    table: str
    png: Path
    seconds: float

    @property
    def ok(self) -> bool:
        """Every request of both runs succeeded and caching ON hit more prefix tokens than OFF."""
        on, off = self.summaries["cache ON"], self.summaries["cache OFF"]
        clean = all(s.ok == s.requests and s.requests > 0 for s in (on, off))
        return clean and (on.prefix_hit_ratio or 0.0) > (off.prefix_hit_ratio or 0.0)


def run_demo(
    out_dir: Path = Path(".strata/bench"),
    *,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo; `overrides` replaces top-level blocks of :data:`DEMO_SCENARIO` (tests
    shrink it). Side effects: starts and stops two simulated fleets, writes `out_dir`."""
    started = time.perf_counter()
    scenario = parse_scenario({**DEMO_SCENARIO, **(overrides or {})}, "demo")
    qps = scenario.workload.rates()[0]
    out = out_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    dataset = prepare_dataset(scenario.dataset)
    engines = scenario.fleet.engines
    log(f"demo: shared-prefix requests at {qps:g} req/s, spread randomly over {engines} simulated engines")
    contenders = [Contender("cache-off", "cache OFF", prefix_caching=False), Contender("cache-on", "cache ON", True)]
    runs = run_contenders(scenario, dataset, qps, contenders, out, tolerate=(), log=log)
    summaries = {r.label: r.summary for r in runs if r.summary is not None}
    table = contenders_report(runs, spread=False)
    png = plot_cdf_compare({r.label: r.records for r in runs}, out / "prefix-caching.png", title=_PLOT_TITLE)
    return DemoResult(out, summaries, table, png, time.perf_counter() - started)


def add_demo(sub: Subparsers) -> None:
    """Register ``demo`` (one line in :data:`strata_bench.cli.COMMANDS`)."""
    p = sub.add_parser("demo", help="~15 s: prefix caching ON vs OFF on a simulated fleet")
    p.add_argument("--out", type=Path, default=Path(".strata/bench"), help="parent of the result directory")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    return main(args.out)


def main(out_dir: Path = Path(".strata/bench")) -> int:
    """Run the demo and print its table, plot and run directories (what ``make demo`` shows).

    Returns:
        0 when both runs completed and caching ON hit more prefix tokens than OFF, else 1.
    """
    result = run_demo(out_dir)
    print()
    print(result.table)
    print(f"\nlatencies in simulated ms; plot: {result.png}")
    print(f"run dirs: {result.out_dir}/cache-off, {result.out_dir}/cache-on ({result.seconds:.1f} s in all)")
    return 0 if result.ok else 1
