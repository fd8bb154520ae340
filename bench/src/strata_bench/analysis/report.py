"""Markdown reports: one run's summary, and several runs side by side with ratios."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from strata_bench.analysis.io import RUN_FILE, read_json, read_summary
from strata_bench.analysis.summary import Summary

__all__ = ["compare", "fmt", "markdown_summary"]

_LATENCY_ROWS = (
    ("ttft", "TTFT"),
    ("ttft_sched", "TTFT from scheduled"),
    ("tpot", "TPOT"),
    ("itl", "ITL (per token)"),
    ("e2e", "E2E"),
    ("e2e_sched", "E2E from scheduled"),
    ("send_lag", "send lag"),
)

Getter = Callable[[Summary], float | None]


def fmt(value: float | None) -> str:
    """Compact number: 4 significant digits, thousands separated, "–" for None."""
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown_summary(summary: Summary, title: str | None = None) -> str:
    """Latency table (ms), throughput/goodput table, errors and per-engine spread."""
    s = summary
    out = [f"### {title}", ""] if title else []
    rows = [
        [label, *(fmt(getattr(d, k)) for k in ("mean", "std", "p50", "p90", "p95", "p99")), str(d.count)]
        for key, label in _LATENCY_ROWS
        if (d := s.latency_ms.get(key)) is not None
    ]
    out += _table(["latency (ms)", "mean", "std", "p50", "p90", "p95", "p99", "n"], rows)
    facts = [
        ("requests ok / failed / cancelled", f"{s.ok} / {s.failed} / {s.cancelled}"),
        ("duration (s)", fmt(s.duration_s)),
        ("offered (req/s)", fmt(s.offered_rps)),
        ("throughput (req/s)", fmt(s.request_throughput)),
        ("output (tok/s)", fmt(s.output_throughput)),
        ("total (tok/s)", fmt(s.total_token_throughput)),
        ("tokens in / out", f"{s.input_tokens} / {s.output_tokens}"),
        ("prefix hit ratio", fmt(s.prefix_hit_ratio)),
        ("client behind schedule", "YES (p99 send lag over threshold)" if s.client_behind else "no"),
    ]
    if s.slo_ms:
        slo = " ".join(f"{k}:{fmt(v)}ms" for k, v in s.slo_ms.items())
        facts += [
            (f"goodput (req/s) {slo}", f"{fmt(s.goodput)} (from schedule: {fmt(s.goodput_scheduled)})"),
            ("SLO attainment", fmt(s.slo_attainment)),
        ]
    out += ["", *_table(["", "value"], facts)]
    if s.errors:
        out += ["", *_table(["error", "count"], [[k, str(v)] for k, v in s.errors.items()])]
    if s.engines:
        rows = [
            [name, str(e.requests), f"{e.share:.1%}", str(e.ok), fmt(e.prefix_hit_ratio)]
            for name, e in s.engines.items()
        ]
        out += ["", *_table(["engine", "requests", "share", "ok", "prefix hit"], rows)]
    return "\n".join(out)


def _lat(key: str, stat: str) -> Getter:
    return lambda s: getattr(d, stat) if (d := s.latency_ms.get(key)) is not None else None


_COMPARE_ROWS: tuple[tuple[str, Getter], ...] = (
    ("requests ok", lambda s: s.ok),
    ("failed", lambda s: s.failed),
    ("offered req/s", lambda s: s.offered_rps),
    ("throughput req/s", lambda s: s.request_throughput),
    ("output tok/s", lambda s: s.output_throughput),
    ("goodput req/s", lambda s: s.goodput),
    *((f"{label} {stat} (ms)", _lat(key, stat)) for key, label in _LATENCY_ROWS for stat in ("p50", "p99")),
    ("prefix hit ratio", lambda s: s.prefix_hit_ratio),
)


def compare(run_dirs: Sequence[str | Path]) -> str:
    """One Markdown table of several runs side by side; every column after the first shows
    ``value (×ratio)`` against the first run (the baseline)."""
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    summaries = [read_summary(d) for d in run_dirs]
    labels = [str(read_json(Path(d) / RUN_FILE).get("label") or Path(d).name) for d in run_dirs]
    rows = []
    for name, get in _COMPARE_ROWS:
        values = [get(s) for s in summaries]
        if all(v is None for v in values):
            continue
        base = values[0]
        cells = [fmt(base)]
        for v in values[1:]:
            ratio = f" (×{v / base:.2f})" if v is not None and base else ""
            cells.append(fmt(v) + ratio)
        rows.append([name, *cells])
    header = ["metric", f"{labels[0]} (baseline)", *labels[1:]]
    return "\n".join(_table(header, rows))
