"""Run directories, Markdown reports, comparisons, plots and the CLI end to end (mock server)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from strata_bench.analysis import (
    RUN_FILE,
    SLO,
    SUMMARY_FILE,
    compare,
    markdown_summary,
    read_records,
    read_summary,
    summarize,
    write_json,
    write_records,
)
from strata_bench.analysis.plots import plot_run, plot_vs_qps
from strata_bench.cli import COMMANDS, build_parser, main
from strata_bench.client import load_plan, save_plan, synthetic_plan
from strata_bench.model import PlannedRequest, RequestRecord
from strata_bench.selfcheck import MockConfig, mock_subprocess

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _records(scale: float, n: int = 10) -> list[RequestRecord]:
    out = []
    for i in range(n):
        t = i * 0.1
        times = [t + scale * 0.02 + k * scale * 0.005 for k in range(4)]
        out.append(
            RequestRecord(
                index=i,
                scheduled_s=t,
                sent_s=t + 0.001,
                status=200,
                first_token_s=times[0],
                end_s=times[-1],
                token_times_s=times,
                chunk_tokens=[1, 1, 1, 1],
                prompt_tokens=16,
                completion_tokens=4,
                cached_tokens=8,
                engine=f"e{i % 2}",
                extra={"note": "x"} if i == 0 else {},
            )
        )
    out.append(RequestRecord(index=n, scheduled_s=1.0, sent_s=1.0, status=503, error_type="http", end_s=1.01))
    return out


def _run_dir(root: Path, name: str, records: list[RequestRecord], label: str | None = None) -> Path:
    run = root / name
    write_records(run / "records.jsonl", records)
    write_json(run / SUMMARY_FILE, summarize(records, SLO(ttft_s=0.03)).to_dict())
    write_json(run / RUN_FILE, {"label": label} if label else {})
    return run


def test_records_round_trip_through_jsonl(tmp_path: Path) -> None:
    records = _records(1.0)
    write_records(tmp_path / "r" / "records.jsonl", records)
    assert read_records(tmp_path / "r") == records
    (tmp_path / "bad.jsonl").write_text('{"index": 0, "scheduled_s": 0, "sent_s": 0, "bogus": 1}\n')
    with pytest.raises(ValueError, match="bogus"):
        read_records(tmp_path / "bad.jsonl")


def test_plan_files_round_trip_and_reject_unknown_fields(tmp_path: Path) -> None:
    plan = [*synthetic_plan(3, rate=10.0, prompt_words=4), PlannedRequest(3, 1.0, 8, messages=[], session_id="s")]
    save_plan(plan, tmp_path / "plan.jsonl")
    assert load_plan(tmp_path / "plan.jsonl") == plan
    (tmp_path / "bad.jsonl").write_text('{"index": 0, "at_s": 0, "max_tokens": 1, "speed": 2}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1.*speed"):
        load_plan(tmp_path / "bad.jsonl")


def test_markdown_summary_has_latency_rows_goodput_errors_and_engines() -> None:
    text = markdown_summary(summarize(_records(1.0), SLO(ttft_s=0.03)), title="base")
    for needle in ("### base", "| TTFT |", "| TTFT from scheduled |", "| ITL (per token) |", "| send lag |"):
        assert needle in text
    assert "goodput (req/s) ttft:30ms" in text
    assert "| http 503 | 1 |" in text
    assert "| e0 | 5 | 45.5% | 5 | 0.5 |" in text
    assert "requests ok / failed / cancelled | 10 / 1 / 0" in text


def test_compare_prints_every_run_with_ratios_against_the_first(tmp_path: Path) -> None:
    base = _run_dir(tmp_path, "base", _records(1.0), label="baseline-router")
    slow = _run_dir(tmp_path, "slow", _records(2.0))
    table = compare([base, slow])
    header, rule, *rows = table.splitlines()
    assert header == "| metric | baseline-router (baseline) | slow |"
    assert rule == "|---|---|---|"
    ttft_p50 = next(r for r in rows if r.startswith("| TTFT p50 (ms) |"))
    assert ttft_p50 == "| TTFT p50 (ms) | 19 | 39 (×2.05) |"  # ttft = 20·scale − 1 ms (sent 1 ms late)
    tpot_p50 = next(r for r in rows if r.startswith("| TPOT p50 (ms) |"))
    assert "(×2.00)" in tpot_p50
    assert any(r.startswith("| goodput req/s |") for r in rows)
    with pytest.raises(ValueError):
        compare([])


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    paths = plot_run(_records(1.0), tmp_path)
    assert [p.name for p in paths] == ["cdf.png", "timeline.png"]
    summaries = [summarize(_records(k)) for k in (1.0, 2.0)]
    qps = plot_vs_qps(summaries, ["a", "b"], tmp_path / "qps.png")
    for path in [*paths, qps]:
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_cli_registers_one_function_per_subcommand() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    names = set(sub.choices)
    assert {"run", "analyze", "compare", "selfcheck"} <= names
    assert len(COMMANDS) == len(names)


def test_cli_run_analyze_compare_against_a_mock_subprocess(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = synthetic_plan(12, rate=100.0, prompt_words=8, max_tokens=4)
    save_plan(plan, tmp_path / "plan.jsonl")
    with mock_subprocess(MockConfig(first_token_delay_s=0.005, per_token_delay_s=0.001)) as url:
        args = ["run", "--url", url, "--no-progress", "--slo", "ttft:1000"]
        assert main([*args, "--plan", str(tmp_path / "plan.jsonl"), "--out", str(tmp_path / "a"), "--warmup", "2"]) == 0
        assert (
            main([*args, "--synthetic", "6", "--mode", "closed", "--concurrency", "2", "--out", str(tmp_path / "b")])
            == 0
        )
    out = capsys.readouterr().out
    assert "### a" in out
    assert "| TTFT |" in out
    records = read_records(tmp_path / "a")
    assert len(records) == 12
    assert all(r.error_type is None and r.completion_tokens == 4 for r in records)
    assert read_summary(tmp_path / "a").goodput is not None
    assert {p.name for p in (tmp_path / "a").glob("*.png")} == {"cdf.png", "timeline.png"}

    assert main(["analyze", str(tmp_path / "a"), "--no-plots", "--slo", "e2e:5000"]) == 0
    assert read_summary(tmp_path / "a").slo_ms == {"e2e": 5000.0}
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--plot", str(tmp_path / "qps.png")]) == 0
    table = capsys.readouterr().out
    assert "| metric | a (baseline) | b |" in table
    assert "requests ok | 12 | 6 (×0.50) |" in table
    assert (tmp_path / "qps.png").read_bytes()[:8] == PNG_MAGIC


def test_record_fields_cover_everything_the_report_reads() -> None:
    names = {f.name for f in dataclasses.fields(RequestRecord)}
    assert {"scheduled_s", "sent_s", "token_times_s", "chunk_tokens", "cached_tokens", "engine"} <= names
