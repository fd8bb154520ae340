"""The calibration fit recovers the coefficients that generated its samples."""

from __future__ import annotations

import pytest

from strata_enginesim.calibrate import Sample, default_trace, fit_profile, summarize
from strata_enginesim.domain.latency import load_profile

TRUE = {"frontend": 0.004, "overhead": 0.002, "per_token": 3e-5, "per_pair": 2e-8, "per_seq": 1e-4, "kv": 5e-7}


def synthetic(trace_repeats: int = 2) -> list[Sample]:
    trace = default_trace(trace_repeats)
    groups: dict[int, list] = {}
    for item in trace:
        groups.setdefault(item.group, []).append(item)
    samples = []
    for members in groups.values():
        tokens = sum(m.prompt_len for m in members)
        pairs = sum(m.prompt_len**2 / 2 for m in members)
        context = sum(m.prompt_len + m.max_tokens / 2 for m in members)
        step = TRUE["overhead"] + TRUE["per_seq"] * len(members) + TRUE["per_token"] * tokens
        ttft = TRUE["frontend"] + step + TRUE["per_pair"] * pairs
        tpot = TRUE["overhead"] + TRUE["per_token"] + TRUE["per_seq"] * len(members) + TRUE["kv"] * context
        samples += [Sample(m, ttft, tpot, m.max_tokens) for m in members]
    return samples


def test_fit_recovers_generating_coefficients() -> None:
    step = fit_profile(synthetic(), load_profile("tiny-cpu")).step
    assert step.per_token_s == pytest.approx(TRUE["per_token"], rel=1e-6)
    assert step.per_pair_s == pytest.approx(TRUE["per_pair"], rel=1e-6)
    assert step.per_seq_s == pytest.approx(TRUE["per_seq"], rel=1e-6)
    assert step.kv_read_s_per_token == pytest.approx(TRUE["kv"], rel=1e-6)
    assert step.overhead_s == pytest.approx(TRUE["overhead"], rel=1e-6)
    assert step.frontend_s == pytest.approx(TRUE["frontend"], rel=1e-6)


def test_fit_keeps_the_engine_shape() -> None:
    base = load_profile("tiny-cpu")
    assert fit_profile(synthetic(), base).engine == base.engine


def test_summary_reports_error_ratios() -> None:
    real = synthetic()
    slower = [Sample(s.item, s.ttft_s * 1.1, s.tpot_s * 0.9, s.completion_tokens) for s in real]
    table = summarize(real, slower)
    assert "+10.0%" in table
    assert "-10.0%" in table
    assert "worst |error|: 10.0%" in table
