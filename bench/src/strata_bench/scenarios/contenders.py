"""One plan, several contenders: each gets a fresh simulated fleet and the identical requests.

A *contender* is a way to reach the engines: the client's own random spread (the default),
or whatever its ``connect`` hook puts in front of the fleet (a peer router, a gateway)
and returns as a :class:`Target`. It may also switch the engines' prefix caching. Used by
``strata-bench demo`` (caching OFF vs ON) and ``strata-bench peers`` (direct vs routers)::

    for each contender: fresh fleet ─▶ connect (optional) ─▶ warm-up + plan ─▶ run dir
                        └─ engines' own request counts (where the traffic went)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from strata_bench.analysis import SLO, Summary
from strata_bench.fleet import Fleet, FleetError, engine_request_counts, simulated_fleet
from strata_bench.model import RequestRecord
from strata_bench.scenarios.build import PreparedDataset, build_plan, build_warmup
from strata_bench.scenarios.report import ratio_table
from strata_bench.scenarios.runner import fleet_config, send_blocking, write_run
from strata_bench.scenarios.schema import Scenario
from strata_bench.scenarios.targets import PlanSender, SendOptions, Target

__all__ = ["Connect", "Contender", "ContenderRun", "contenders_report", "run_contenders"]


@dataclass
class ContenderRun:
    """One contender's result, or exactly why it did not run.

    Attributes:
        label: column name in the table (a ``connect`` hook may refine it, e.g. a version).
        summary: the run's summary; None when it did not run.
        status: ``ok`` or ``not run: <why>``.
        spread: requests each engine finished, from the engines' own metrics.
        notes: facts the ``connect`` hook reports (install time, start-up).
        records: the measured records (simulated seconds).
    """

    label: str
    summary: Summary | None = None
    status: str = "ok"
    spread: dict[str, int] = field(default_factory=dict)
    notes: str = ""
    records: list[RequestRecord] = field(default_factory=list)


Connect = Callable[[Fleet, Path, contextlib.ExitStack, ContenderRun], Target]
"""Put something in front of `fleet` (its processes registered on the stack, logs under
the run directory); return the target to send to. May set ``run.label`` / ``run.notes``."""


@dataclass(frozen=True)
class Contender:
    """A way to send the plan.

    Attributes:
        key: directory name of its run.
        label: column name.
        prefix_caching: engines' prefix caching (None: the scenario's).
        connect: hook in front of the fleet; None = the client spreads randomly itself.
    """

    key: str
    label: str
    prefix_caching: bool | None = None
    connect: Connect | None = None


def run_contenders(
    scenario: Scenario,
    dataset: PreparedDataset,
    qps: float,
    contenders: Sequence[Contender],
    out_dir: Path,
    *,
    tolerate: tuple[type[Exception], ...] = (FleetError,),
    log: Callable[[str], None] = print,
) -> list[ContenderRun]:
    """Run every contender on the same plan (the scenario's point `qps`) and warm-up.

    Exceptions of the `tolerate` types mark that contender ``not run`` with their message;
    the next one still runs. Side effects: fleets and whatever ``connect`` starts (all
    stopped before returning), run directories under `out_dir`.
    """
    w, scale = scenario.workload, scenario.fleet.time_scale
    plan, warmup = build_plan(scenario, dataset, qps), build_warmup(scenario, dataset)
    runs = []
    for c in contenders:
        run = ContenderRun(c.label)
        run_dir = out_dir / c.key
        try:
            with contextlib.ExitStack() as stack:
                config = fleet_config(scenario.fleet, prefix_caching=c.prefix_caching)
                fleet = stack.enter_context(simulated_fleet(config, log_path=run_dir / "fleet.log"))
                if c.connect is None:
                    target = Target("random", tuple(fleet.engine_urls), tuple(e.engine_id for e in fleet.engines))
                else:
                    target = c.connect(fleet, run_dir, stack, run)
                send = SendOptions(
                    model=fleet.model,
                    api=w.api,
                    time_scale=scale,
                    duration_s=w.duration_s,
                    deadline_s=w.duration_s + w.drain_s,
                    timeout_s=w.timeout_s,
                    seed=w.seed,
                )
                outcome = send_blocking(PlanSender(), target, plan, send, warmup)
                run.spread = engine_request_counts(fleet.engines)
        except tolerate as exc:
            run.status = f"not run: {exc}"
            log(f"  {run.label}: {run.status}")
            runs.append(run)
            continue
        meta = {"label": run.label, "contender": c.key, "target": list(target.urls), "notes": run.notes}
        run.summary = write_run(run_dir, outcome, SLO.parse(w.slo), scale, meta, plots=False)
        run.records = outcome.records
        log(f"  {run.label}: {run.summary.ok}/{run.summary.requests} ok ({outcome.elapsed_wall_s:.1f} s wall)")
        runs.append(run)
    return runs


def contenders_report(runs: Sequence[ContenderRun], *, spread: bool = True) -> str:
    """The ratio table of the contenders that ran (first = baseline), then one line each:
    status, notes and (optionally) the requests each engine served."""
    done = [(r.label, r.summary) for r in runs if r.summary is not None]
    lines = [ratio_table([s for _, s in done], [label for label, _ in done]), ""] if done else []
    for r in runs:
        line = f"- {r.label}: {r.status}" + (f"; {r.notes}" if r.notes else "")
        if spread and r.spread:
            line += "; served per engine: " + ", ".join(f"{k} {v}" for k, v in r.spread.items())
        lines.append(line)
    return "\n".join(lines)
