"""Metric math on hand-made records: percentiles, TTFT/TPOT/ITL, goodput, errors, engines."""

from __future__ import annotations

import math

import pytest

from strata_bench.analysis import SLO, Summary, describe, itl_gaps, percentile, summarize, tpot, ttft
from strata_bench.analysis import metrics as m
from strata_bench.model import RequestRecord


def _rec(
    index: int,
    *,
    sched: float = 0.0,
    sent: float = 0.0,
    times: tuple[float, ...] = (0.1,),
    counts: tuple[int, ...] | None = None,
    end: float | None = None,
    **kw: object,
) -> RequestRecord:
    chunks = list(counts) if counts is not None else [1] * len(times)
    return RequestRecord(
        index=index,
        scheduled_s=sched,
        sent_s=sent,
        status=200,
        first_token_s=times[0] if times else None,
        end_s=end if end is not None else (times[-1] if times else sent),
        token_times_s=list(times),
        chunk_tokens=chunks,
        completion_tokens=sum(chunks),
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 90, 3.7),
        ([1.0, 2.0, 3.0, 4.0], 99, 3.97),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([7.0], 99, 7.0),
        ([0.0, 10.0], 95, 9.5),
    ],
)
def test_percentile_interpolates_linearly_like_numpy(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected, abs=1e-12)


def test_describe_reports_population_std_and_scales() -> None:
    d = describe([0.001, 0.002, 0.003, 0.004], scale=1000.0)
    assert d is not None
    assert (d.count, d.min, d.max) == (4, 1.0, 4.0)
    assert d.mean == pytest.approx(2.5)
    assert d.std == pytest.approx(math.sqrt(1.25))
    assert (d.p50, d.p90, d.p95, d.p99) == pytest.approx((2.5, 3.7, 3.85, 3.97))
    assert describe([]) is None
    with pytest.raises(ValueError):
        percentile([], 50)


def test_itl_splits_a_multi_token_chunk_gap_evenly_per_token() -> None:
    # chunks: 1 token at 100 ms, 3 tokens at 106 ms, 2 tokens at 112 ms
    rec = _rec(0, times=(0.100, 0.106, 0.112), counts=(1, 3, 2))
    assert itl_gaps(rec) == pytest.approx([0.002, 0.002, 0.002, 0.003, 0.003])
    assert tpot(rec) == pytest.approx(0.012 / 5)  # (last - first) / (6 - 1)
    assert m.output_tokens(rec) == 6


def test_tokens_of_the_first_chunk_add_no_itl_gap() -> None:
    rec = _rec(0, times=(0.100, 0.105), counts=(2, 1))
    assert itl_gaps(rec) == pytest.approx([0.005])
    assert tpot(rec) == pytest.approx(0.005 / 2)


def test_latency_from_schedule_includes_send_lag() -> None:
    rec = _rec(0, sched=1.0, sent=1.25, times=(1.30, 1.31), end=1.32)
    assert ttft(rec) == pytest.approx(0.05)
    assert ttft(rec, from_scheduled=True) == pytest.approx(0.30)
    assert m.e2e(rec) == pytest.approx(0.07)
    assert m.e2e(rec, from_scheduled=True) == pytest.approx(0.32)
    assert m.send_lag(rec) == pytest.approx(0.25)


def test_tpot_and_itl_are_undefined_for_one_token_or_unstreamed_answers() -> None:
    assert tpot(_rec(0, times=(0.1,))) is None
    assert itl_gaps(_rec(0, times=(0.1,))) == []
    unstreamed = _rec(1, times=(0.2,), counts=(8,), extra={"stream": False})
    assert tpot(unstreamed) is None
    assert itl_gaps(unstreamed) == []


def test_goodput_counts_requests_meeting_every_slo_from_send_and_from_schedule() -> None:
    records = [
        _rec(0, sched=0.0, sent=0.0, times=(0.02, 0.03, 0.04)),  # ttft 20 ms, tpot 10 ms: good
        _rec(1, sched=0.0, sent=0.5, times=(0.52, 0.53, 0.54)),  # good from send, ttft 520 ms from schedule
        _rec(2, sched=0.5, sent=0.5, times=(0.60, 0.61, 0.62)),  # ttft 100 ms: misses
        _rec(3, sched=0.5, sent=0.5, times=(0.51, 0.60, 0.69)),  # tpot 90 ms: misses
        _rec(4, sched=1.0, sent=1.0, times=(1.01,)),  # one token: tpot counts as 0: good
        RequestRecord(index=5, scheduled_s=1.0, sent_s=1.0, status=503, error_type="http", end_s=2.0),
    ]
    slo = SLO.parse("ttft:50,tpot:20")
    assert slo == SLO(ttft_s=0.05, tpot_s=0.02)
    s = summarize(records, slo)
    assert s.duration_s == pytest.approx(2.0)  # first scheduled (0) → last end (2.0)
    assert s.goodput == pytest.approx(3 / 2.0)
    assert s.goodput_scheduled == pytest.approx(2 / 2.0)
    assert s.slo_attainment == pytest.approx(3 / 6)
    assert s.request_throughput == pytest.approx(5 / 2.0)
    assert s.output_throughput == pytest.approx(13 / 2.0)
    assert s.slo_ms == {"ttft": 50.0, "tpot": 20.0}


@pytest.mark.parametrize("spec", ["ttft", "ttft:", "latency:5", "ttft=5"])
def test_bad_slo_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match="SLO"):
        SLO.parse(spec)


def test_errors_are_broken_down_by_type_and_status() -> None:
    records = [
        _rec(0),
        RequestRecord(index=1, scheduled_s=0, sent_s=0, status=503, error_type="http", end_s=0.1),
        RequestRecord(index=2, scheduled_s=0, sent_s=0, status=503, error_type="http", end_s=0.1),
        RequestRecord(index=3, scheduled_s=0, sent_s=0, status=429, error_type="http", end_s=0.1),
        RequestRecord(index=4, scheduled_s=0, sent_s=0, error_type="timeout", end_s=0.1),
        RequestRecord(index=5, scheduled_s=0, sent_s=0, error_type="cancelled", end_s=0.1),
    ]
    s = summarize(records)
    assert s.errors == {"cancelled": 1, "http 429": 1, "http 503": 2, "timeout": 1}
    assert (s.requests, s.ok, s.failed, s.cancelled) == (6, 1, 4, 1)


def test_engine_spread_and_prefix_hit_ratio() -> None:
    records = [
        _rec(0, engine="e0", prompt_tokens=100, cached_tokens=50),
        _rec(1, engine="e0", prompt_tokens=100, cached_tokens=0),
        _rec(2, engine="e1", prompt_tokens=200, cached_tokens=200),
        _rec(3, engine="e1", prompt_tokens=100),  # no cached count reported: left out of the ratio
    ]
    s = summarize(records)
    assert s.engines["e0"].requests == 2
    assert s.engines["e0"].share == 0.5
    assert s.engines["e0"].prefix_hit_ratio == pytest.approx(0.25)
    assert s.engines["e1"].prefix_hit_ratio == pytest.approx(1.0)
    assert s.prefix_hit_ratio == pytest.approx(250 / 400)
    assert summarize([_rec(0)]).engines == {}
    assert summarize([_rec(0)]).prefix_hit_ratio is None


def test_send_lag_over_threshold_flags_the_client_as_behind() -> None:
    on_time = [_rec(i, sched=i * 0.1, sent=i * 0.1, times=(i * 0.1 + 0.02,)) for i in range(10)]
    late = [_rec(i, sched=i * 0.1, sent=i * 0.1 + i * 0.01, times=(i * 0.11 + 0.02,)) for i in range(10)]
    assert not summarize(on_time).client_behind
    assert summarize(late).client_behind
    assert summarize(late).latency_ms["send_lag"].max == pytest.approx(90.0)


def test_summary_round_trips_through_a_dict() -> None:
    s = summarize([_rec(0, engine="e", times=(0.1, 0.2)), _rec(1, times=(0.3, 0.5))], SLO(e2e_s=1.0))
    assert Summary.from_dict(s.to_dict()) == s
    assert set(s.latency_ms) == {"ttft", "tpot", "itl", "e2e", "ttft_sched", "e2e_sched", "send_lag"}


def test_empty_run_summarises_to_zeros() -> None:
    s = summarize([])
    assert (s.requests, s.ok, s.duration_s, s.request_throughput, s.latency_ms) == (0, 0, 0.0, 0.0, {})
