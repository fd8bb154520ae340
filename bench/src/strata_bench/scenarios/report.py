"""Scenario reports: the sweep table, a side-by-side ratio table, and the TTFT-vs-QPS plot.

Latencies are in milliseconds of the clock the records are in (simulated time for
scenario runs). The ratio table divides every column by the baseline column (first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strata_bench.analysis import Summary
from strata_bench.analysis import metrics as m
from strata_bench.analysis.report import fmt
from strata_bench.model import RequestRecord

__all__ = ["PointRow", "plot_cdf_compare", "plot_sweep", "ratio_table", "sweep_table"]

Getter = Callable[[Summary], float | None]


@dataclass(frozen=True)
class PointRow:
    """One measured point of a sweep."""

    strategy: str
    qps: float
    summary: Summary
    run_dir: str
    stopped_by: str


def _lat(key: str, stat: str) -> Getter:
    return lambda s: getattr(d, stat) if (d := s.latency_ms.get(key)) is not None else None


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


_SWEEP_COLUMNS: tuple[tuple[str, Getter], ...] = (
    ("offered req/s", lambda s: s.offered_rps),
    ("TTFT avg", _lat("ttft", "mean")),
    ("TTFT p50", _lat("ttft", "p50")),
    ("TTFT p99", _lat("ttft", "p99")),
    ("TPOT p50", _lat("tpot", "p50")),
    ("E2E p99", _lat("e2e", "p99")),
    ("prefix hit", lambda s: s.prefix_hit_ratio),
    ("req/s", lambda s: s.request_throughput),
    ("out tok/s", lambda s: s.output_throughput),
)


def sweep_table(rows: Sequence[PointRow]) -> str:
    """One line per (strategy, QPS): counts, TTFT avg/p50/p99, TPOT, E2E, hit ratio,
    throughput; a point whose run was cut short says why in the last column."""
    header = ["strategy", "QPS", "ok / sent", *(name for name, _ in _SWEEP_COLUMNS), "note"]
    body = []
    for r in rows:
        s = r.summary
        notes = [f"stopped: {r.stopped_by}"] if r.stopped_by not in ("complete", "duration") else []
        if s.failed or s.cancelled:
            notes.append(f"{s.failed} failed, {s.cancelled} cancelled")
        if s.client_behind:
            notes.append("client behind schedule")
        cells = [fmt(get(s)) for _, get in _SWEEP_COLUMNS]
        body.append([r.strategy, fmt(r.qps), f"{s.ok} / {s.requests}", *cells, "; ".join(notes)])
    return _table(header, body)


RATIO_ROWS: tuple[tuple[str, Getter], ...] = (
    ("TTFT p50 (ms)", _lat("ttft", "p50")),
    ("TTFT p99 (ms)", _lat("ttft", "p99")),
    ("TPOT p50 (ms)", _lat("tpot", "p50")),
    ("TPOT p99 (ms)", _lat("tpot", "p99")),
    ("E2E p50 (ms)", _lat("e2e", "p50")),
    ("E2E p99 (ms)", _lat("e2e", "p99")),
    ("prefix-hit ratio", lambda s: s.prefix_hit_ratio),
    ("throughput (req/s)", lambda s: s.request_throughput),
    ("output (tok/s)", lambda s: s.output_throughput),
    ("requests ok", lambda s: s.ok),
    ("failed + cancelled", lambda s: s.failed + s.cancelled),
)


def ratio_table(
    summaries: Sequence[Summary], labels: Sequence[str], rows: Sequence[tuple[str, Getter]] = RATIO_ROWS
) -> str:
    """Metrics as rows, runs as columns, then one ``<label> / <baseline>`` ratio column per
    later run (the first run is the baseline)."""
    if not summaries or len(summaries) != len(labels):
        raise ValueError("ratio_table needs one label per summary and at least one summary")
    base = labels[0]
    header = ["metric", *labels, *(f"{label} / {base}" for label in labels[1:])]
    body = []
    for name, get in rows:
        values = [get(s) for s in summaries]
        ratios = [f"×{v / values[0]:.2f}" if v is not None and values[0] not in (None, 0) else "–" for v in values[1:]]
        body.append([name, *(fmt(v) for v in values), *ratios])
    return _table(header, body)


def _figure(cols: int) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.3 * cols, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, cols))


def _save(fig: Any, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def plot_cdf_compare(runs: Mapping[str, Sequence[RequestRecord]], path: str | Path, *, title: str = "") -> Path:
    """CDFs of TTFT, TPOT and E2E (ms, successful requests), one line per labelled run."""
    fig, axes = _figure(3)
    metrics: tuple[tuple[str, Callable[[RequestRecord], float | None]], ...] = (
        ("TTFT", m.ttft),
        ("TPOT", m.tpot),
        ("E2E", m.e2e),
    )
    for ax, (name, get) in zip(axes, metrics, strict=True):
        for label, records in runs.items():
            values = sorted(v * 1000 for r in records if m.is_ok(r) and (v := get(r)) is not None)
            if values:
                ax.plot(
                    values, [(i + 1) / len(values) for i in range(len(values))], label=label, drawstyle="steps-post"
                )
        ax.set(title=name, xlabel="ms", ylabel="fraction of requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_sweep(rows: Sequence[PointRow], path: str | Path, *, title: str = "") -> Path:
    """Average and P99 TTFT and the prefix-hit ratio against QPS, one line per strategy
    (log scale for TTFT when it spans more than 20×). Returns `path`."""
    fig, axes = _figure(3)
    panels: tuple[tuple[str, Getter], ...] = (
        ("TTFT avg (ms)", _lat("ttft", "mean")),
        ("TTFT p99 (ms)", _lat("ttft", "p99")),
        ("prefix-hit ratio", lambda s: s.prefix_hit_ratio),
    )
    strategies = list(dict.fromkeys(r.strategy for r in rows))
    for ax, (label, get) in zip(axes, panels, strict=True):
        values: list[float] = []
        for strategy in strategies:
            points = sorted((r.qps, get(r.summary)) for r in rows if r.strategy == strategy)
            ys = [math.nan if y is None else y for _, y in points]
            values += [y for y in ys if y > 0]
            ax.plot([x for x, _ in points], ys, "o-", label=strategy)
        if label.startswith("TTFT") and values and max(values) > 20 * min(values):
            ax.set_yscale("log")
        elif not label.startswith("TTFT"):
            ax.set_ylim(0, 1.05)
        ax.set(title=label, xlabel="QPS (offered)", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
