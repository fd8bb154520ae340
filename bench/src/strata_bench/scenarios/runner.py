"""Run a scenario end to end: fleet → dataset → plans → runs → analysis → reports.

Output (``<out>/<name>[-quick]-<YYYYmmdd-HHMMSS>/``)::

    scenario.yaml              the validated scenario as run (+ source sha256 in summary.json)
    dataset.jsonl              the generated prompts / sessions (AIBrix-compatible)
    runs/<strategy>/qps-<q>/   one run directory per point: records.jsonl, summary.json,
                               run.json, cdf.png, timeline.png (strata-bench analyze/compare work on it)
    fleet/<strategy>-<q>.log   the simulated fleet's log for that point
    summary.json, summary.md   every point; the Markdown table
    sweep.png                  TTFT avg/p99 and prefix-hit ratio vs QPS, one line per strategy

Every point stops by itself: arrivals end at ``ramp_s + duration_s`` and whatever is still
in flight ``drain_s`` later is cancelled (and counted). Requests scheduled in the first
``ramp_s`` are sent but not measured (not in records.jsonl; counted in run.json). SIGINT
cancels the current point and skips the rest; the reports then cover what ran.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from strata_bench.analysis import RECORDS_FILE, RUN_FILE, SLO, SUMMARY_FILE, Summary, summarize, write_json
from strata_bench.analysis import write_records as _write_records
from strata_bench.fleet import Fleet, FleetConfig, start_fleet
from strata_bench.model import PlannedRequest
from strata_bench.scenarios.build import PreparedDataset, build_plan, build_warmup, prepare_dataset
from strata_bench.scenarios.loader import LoadedScenario
from strata_bench.scenarios.report import PointRow, plot_sweep, sweep_table
from strata_bench.scenarios.schema import FleetSpec, StrategySpec
from strata_bench.scenarios.targets import Outcome, PlanSender, SendOptions, Target

__all__ = ["ScenarioOptions", "ScenarioResult", "fleet_config", "run_scenario", "send_blocking", "write_run"]

_BEHIND_WALL_S = 0.010  # p99 send lag (wall) above which the client is declared behind


@dataclass(frozen=True)
class ScenarioOptions:
    """Where results go and what to send to besides a fleet the scenario starts itself.

    Attributes:
        out_dir: parent of the scenario's result directory.
        gateway_url: Strata gateway for ``kind: gateway`` strategies (skipped without one).
        engine_urls: existing engines for client-side strategies (no fleet is started).
        time_scale: the existing engines' time scale (default: the scenario's).
        api_key: bearer token for the gateway.
        plots: per-point CDF and timeline PNGs.
        log: progress lines.
    """

    out_dir: Path = Path(".strata/bench")
    gateway_url: str | None = None
    engine_urls: tuple[str, ...] = ()
    time_scale: float | None = None
    api_key: str | None = None
    plots: bool = True
    log: Callable[[str], None] = print


@dataclass
class ScenarioResult:
    """What a scenario run produced."""

    out_dir: Path
    rows: list[PointRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    table: str = ""
    png: Path | None = None
    interrupted: bool = False


def fleet_config(spec: FleetSpec, *, prefix_caching: bool | None = None) -> FleetConfig:
    """The :class:`FleetConfig` of a scenario's fleet block."""
    extra = {"MAX_NUM_SEQS": str(spec.max_num_seqs)} if spec.max_num_seqs else {}
    return FleetConfig(
        engines=spec.engines,
        profile=spec.profile,
        time_scale=spec.time_scale,
        prefix_caching=spec.prefix_caching if prefix_caching is None else prefix_caching,
        num_blocks=spec.num_blocks,
        block_size=spec.block_size,
        extra_env=extra,
    )


def send_blocking(
    sender: PlanSender,
    target: Target,
    plan: Sequence[PlannedRequest],
    options: SendOptions,
    warmup: Sequence[PlannedRequest] = (),
) -> Outcome:
    """:meth:`PlanSender.send` in a fresh event loop, SIGINT mapped to ``sender.stop``."""

    async def main() -> Outcome:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, sender.stop)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread: no handler
            return await sender.send(target, plan, options, warmup=warmup)
        try:
            return await sender.send(target, plan, options, warmup=warmup)
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())


def write_run(
    run_dir: Path, outcome: Outcome, slo: SLO, time_scale: float, meta: dict[str, Any], *, plots: bool
) -> Summary:
    """Write one run directory (records, summary, run.json, plots); return the summary.

    Records are in simulated seconds; the "client behind" threshold is scaled to match.
    """
    summary = summarize(outcome.records, slo, behind_p99_s=_BEHIND_WALL_S * time_scale)
    _write_records(run_dir / RECORDS_FILE, outcome.records)
    write_json(run_dir / SUMMARY_FILE, summary.to_dict())
    run_meta = {
        **meta,
        "time_scale": time_scale,
        "clock": "simulated seconds (wall x time_scale)",
        "model": outcome.model,
        "planned": outcome.planned,
        "sent": outcome.sent,
        "stopped_by": outcome.stopped_by,
        "elapsed_wall_s": round(outcome.elapsed_wall_s, 3),
        "warmup_failed": outcome.warmup_failed,
        "slo": " ".join(f"{k}:{v:g}" for k, v in slo.to_ms().items()),
    }
    write_json(run_dir / RUN_FILE, run_meta)
    if plots and outcome.records:
        from strata_bench.analysis.plots import plot_run

        plot_run(outcome.records, run_dir)
    return summary


def _runnable(
    strategies: Sequence[StrategySpec], options: ScenarioOptions
) -> tuple[list[StrategySpec], dict[str, str]]:
    runnable, skipped = [], {}
    for s in strategies:
        if s.kind == "gateway" and options.gateway_url is None:
            skipped[s.name] = "needs --gateway-url (a Strata gateway in front of the engines)"
        else:
            runnable.append(s)
    return runnable, skipped


def _target(strategy: StrategySpec, fleet: Fleet | None, options: ScenarioOptions) -> Target:
    if strategy.kind == "gateway":
        assert options.gateway_url is not None
        return Target("endpoint", (options.gateway_url,), routing_strategy=strategy.routing_strategy)
    if fleet is not None:
        return Target(strategy.kind, tuple(fleet.engine_urls), tuple(e.engine_id for e in fleet.engines))
    return Target(strategy.kind, options.engine_urls)


def run_scenario(loaded: LoadedScenario, options: ScenarioOptions | None = None) -> ScenarioResult:
    """Run every strategy over every QPS point of the scenario; write and return the reports.

    Side effects: starts and stops simulated fleets (unless ``engine_urls`` are given),
    writes the result directory, prints progress through ``options.log``.
    """
    options = options or ScenarioOptions()
    s = loaded.scenario
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = options.out_dir / f"{s.name}{'-quick' if loaded.quick else ''}-{stamp}"
    out.mkdir(parents=True, exist_ok=False)
    (out / "scenario.yaml").write_text(yaml.safe_dump(s.model_dump(mode="json"), sort_keys=False))
    result = ScenarioResult(out)
    started = time.perf_counter()
    dataset = prepare_dataset(s.dataset)
    dataset.write(out / "dataset.jsonl")
    options.log(f"{s.name}: dataset {dataset.stats} ({time.perf_counter() - started:.1f} s)")
    strategies, result.skipped = _runnable(s.strategies, options)
    for name, why in result.skipped.items():
        options.log(f"{s.name}: strategy {name} skipped: {why}")
    sweep = _Sweep(loaded, dataset, options, result, options.time_scale or s.fleet.time_scale)
    for strategy in strategies:
        sweep.run_strategy(strategy)
        if sweep.sender.stopped:
            result.interrupted = True
            break
    result.table = sweep_table(result.rows)
    if result.rows:
        result.png = plot_sweep(result.rows, out / "sweep.png", title=s.name + (" (quick)" if loaded.quick else ""))
    _write_reports(loaded, result, dataset.stats, sweep.scale)
    options.log(f"{s.name}: done in {time.perf_counter() - started:.1f} s -> {out}")
    return result


@dataclass
class _Sweep:
    """The state one scenario run shares across its strategies and points."""

    loaded: LoadedScenario
    dataset: PreparedDataset
    options: ScenarioOptions
    result: ScenarioResult
    scale: float
    sender: PlanSender = field(default_factory=PlanSender)

    def run_strategy(self, strategy: StrategySpec) -> None:
        """Every QPS point of one strategy; fleets restarted as the scenario says, always stopped."""
        s = self.loaded.scenario
        managed = strategy.kind != "gateway" and not self.options.engine_urls
        fleet: Fleet | None = None
        try:
            for qps in s.workload.rates():
                if self.sender.stopped:
                    return
                if managed and (fleet is None or s.fleet.restart == "point"):
                    if fleet is not None:
                        fleet.stop()
                    fleet = None  # a failed start must not leave the old handle behind
                    log = self.result.out_dir / "fleet" / f"{strategy.name}-{qps:g}.log"
                    fleet = start_fleet(fleet_config(s.fleet), log_path=log)
                self._point(strategy, qps, fleet)
        finally:
            if fleet is not None:
                fleet.stop()

    def _point(self, strategy: StrategySpec, qps: float, fleet: Fleet | None) -> None:
        s, w = self.loaded.scenario, self.loaded.scenario.workload
        target = _target(strategy, fleet, self.options)
        warmup = build_warmup(s, self.dataset)
        send = SendOptions(
            model=fleet.model if fleet is not None else None,
            api=w.api,
            time_scale=self.scale,
            duration_s=w.ramp_s + w.duration_s,
            deadline_s=w.ramp_s + w.duration_s + w.drain_s,
            timeout_s=w.timeout_s,
            seed=w.seed,
            api_key=self.options.api_key,
        )
        outcome = send_blocking(self.sender, target, build_plan(s, self.dataset, qps), send, warmup)
        measured = [r for r in outcome.records if r.scheduled_s >= w.ramp_s]
        meta = {
            "label": f"{strategy.name} @ {qps:g} qps",
            "scenario": s.name,
            "scenario_sha256": self.loaded.sha256,
            "quick": self.loaded.quick,
            "strategy": strategy.model_dump(),
            "qps": qps,
            "target": list(target.urls),
            "warmup_requests": len(warmup),
            "ramp_s": w.ramp_s,
            "ramp_requests": len(outcome.records) - len(measured),
        }
        run_dir = self.result.out_dir / "runs" / strategy.name / f"qps-{qps:g}"
        outcome = replace(outcome, records=measured)
        summary = write_run(run_dir, outcome, SLO.parse(w.slo), self.scale, meta, plots=self.options.plots)
        self.result.rows.append(PointRow(strategy.name, qps, summary, str(run_dir), outcome.stopped_by))
        ttft = summary.latency_ms.get("ttft")
        self.options.log(
            f"  {strategy.name} @ {qps:g}: {summary.ok}/{summary.requests} ok,"
            f" TTFT avg {ttft.mean if ttft else float('nan'):.0f} ms, hit {summary.prefix_hit_ratio or 0:.2f},"
            f" {outcome.elapsed_wall_s:.1f} s wall"
        )


def _write_reports(loaded: LoadedScenario, result: ScenarioResult, stats: dict[str, Any], scale: float) -> None:
    s = loaded.scenario
    points = [
        {"strategy": r.strategy, "qps": r.qps, "run_dir": r.run_dir, "stopped_by": r.stopped_by, **r.summary.to_dict()}
        for r in result.rows
    ]
    write_json(
        result.out_dir / "summary.json",
        {
            "scenario": s.name,
            "scenario_sha256": loaded.sha256,
            "quick": loaded.quick,
            "time_scale": scale,
            "dataset": stats,
            "skipped": result.skipped,
            "interrupted": result.interrupted,
            "points": points,
        },
    )
    lines = [f"# {s.name}{' (quick)' if loaded.quick else ''}", "", s.description.strip(), ""]
    if s.scaling:
        lines += ["## Scaling", "", s.scaling.strip(), ""]
    lines += [f"Dataset: {stats}", "", f"Latencies in simulated ms (time scale {scale:g}).", "", result.table, ""]
    lines += [f"- {name}: skipped ({why})" for name, why in result.skipped.items()]
    if result.interrupted:
        lines.append("- interrupted: later points did not run")
    if result.png is not None:
        lines += ["", f"![sweep]({result.png.name})"]
    (result.out_dir / "summary.md").write_text("\n".join(lines) + "\n")
