"""PNG plots with matplotlib's Agg canvas (no pyplot, no display, no global state).

* :func:`plot_cdfs`: CDFs of TTFT, TPOT, E2E; from send (solid) and from schedule (dashed).
* :func:`plot_timeline`: per-request latency against scheduled send time, and send lag.
* :func:`plot_vs_qps`: TTFT and TPOT percentiles against offered rate across runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from strata_bench.analysis import metrics as m
from strata_bench.analysis.summary import Summary
from strata_bench.model import RequestRecord

__all__ = ["plot_cdfs", "plot_run", "plot_timeline", "plot_vs_qps"]

_MS = 1000.0


def _figure(cols: int, rows: int = 1, width: float = 4.2) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * cols, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _cdf(ax: Axes, values: Sequence[float], label: str, style: str = "-") -> None:
    data = sorted(values)
    if data:
        n = len(data)
        ax.plot(data, [(i + 1) / n for i in range(n)], style, label=label, drawstyle="steps-post")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_cdfs(records: Sequence[RequestRecord], path: str | Path) -> Path:
    """CDFs of TTFT, TPOT and E2E (ms) of the successful requests; returns `path`."""
    ok = [r for r in records if m.is_ok(r)]
    fig, (a_ttft, a_tpot, a_e2e) = _figure(3)
    _cdf(a_ttft, [v * _MS for r in ok if (v := m.ttft(r)) is not None], "from send")
    _cdf(a_ttft, [v * _MS for r in ok if (v := m.ttft(r, from_scheduled=True)) is not None], "from scheduled", "--")
    _cdf(a_tpot, [v * _MS for r in ok if (v := m.tpot(r)) is not None], "TPOT")
    _cdf(a_tpot, [g * _MS for r in ok for g in m.itl_gaps(r)], "ITL (per token)", ":")
    _cdf(a_e2e, [v * _MS for r in ok if (v := m.e2e(r)) is not None], "from send")
    _cdf(a_e2e, [v * _MS for r in ok if (v := m.e2e(r, from_scheduled=True)) is not None], "from scheduled", "--")
    for ax, title in ((a_ttft, "TTFT"), (a_tpot, "TPOT / ITL"), (a_e2e, "E2E")):
        ax.set(title=title, xlabel="ms", ylabel="fraction of requests")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
    return _save(fig, path)


def plot_timeline(records: Sequence[RequestRecord], path: str | Path) -> Path:
    """Per-request E2E and TTFT (from send and from schedule) and send lag, against the
    scheduled send time; failed requests marked with a red x. Returns `path`."""
    ok = [r for r in records if m.is_ok(r)]
    bad = [r for r in records if not m.is_ok(r)]
    fig, (a_lat, a_lag) = _figure(1, 2, width=9.0)
    x = [r.scheduled_s for r in ok]
    for series, label, marker in (
        ([m.e2e(r, from_scheduled=True) for r in ok], "E2E from scheduled", "."),
        ([m.e2e(r) for r in ok], "E2E from send", "+"),
        ([m.ttft(r) for r in ok], "TTFT from send", "1"),
    ):
        a_lat.plot(x, [(v or 0.0) * _MS for v in series], marker, label=label, markersize=4, linestyle="none")
    if bad:
        ys = [(r.end_s or r.sent_s) - r.sent_s for r in bad]
        a_lat.plot([r.scheduled_s for r in bad], [y * _MS for y in ys], "rx", label="failed / cancelled")
    a_lat.set(title="latency per request", xlabel="scheduled send (s)", ylabel="ms")
    a_lag.plot([r.scheduled_s for r in records], [m.send_lag(r) * _MS for r in records], ".", markersize=3)
    a_lag.set(title="send lag (sent − scheduled)", xlabel="scheduled send (s)", ylabel="ms")
    for ax in (a_lat, a_lag):
        ax.grid(alpha=0.3)
    if a_lat.get_lines():
        a_lat.legend(fontsize="small")
    return _save(fig, path)


def plot_vs_qps(summaries: Sequence[Summary], labels: Sequence[str], path: str | Path) -> Path:
    """TTFT and TPOT (p50, p99; TTFT also from schedule) against each run's offered rate
    (its achieved throughput when the rate is unknown). Returns `path`."""
    points = sorted(
        zip((s.offered_rps or s.request_throughput for s in summaries), summaries, labels, strict=True),
        key=lambda p: p[0],
    )
    fig, (a_ttft, a_tpot) = _figure(2)
    xs = [p[0] for p in points]
    for ax, key, extra in ((a_ttft, "ttft", "ttft_sched"), (a_tpot, "tpot", None)):
        for stat, style in (("p50", "o-"), ("p99", "s--")):
            for k, suffix in ((key, ""), (extra, " from scheduled")):
                if k is None:
                    continue
                ys = [getattr(d, stat) if (d := s.latency_ms.get(k)) else float("nan") for _, s, _ in points]
                ax.plot(xs, ys, style, label=f"{stat}{suffix}", alpha=0.6 if suffix else 1.0)
        ax.set(title=f"{key.upper()} vs offered rate", xlabel="req/s", ylabel="ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for x, s, label in points:
        d = s.latency_ms.get("ttft")
        if d is not None:
            a_ttft.annotate(label, (x, d.p50), fontsize="x-small", alpha=0.7)
    return _save(fig, path)


def plot_run(records: Sequence[RequestRecord], out_dir: str | Path) -> list[Path]:
    """Both per-run plots into `out_dir` (``cdf.png``, ``timeline.png``)."""
    out = Path(out_dir)
    return [plot_cdfs(records, out / "cdf.png"), plot_timeline(records, out / "timeline.png")]
