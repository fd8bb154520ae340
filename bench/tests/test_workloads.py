"""Workloads: arrival statistics (seeded), patterns, lengths, builders and AIBrix files."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from pathlib import Path

import pytest

from strata_bench.datasets import PromptEntry, SessionEntry, SharedPromptEntry, read_dataset
from strata_bench.tokenizer import SimBenchTokenizer
from strata_bench.traces import read_azure, read_grafana_qps, read_mooncake, scale_time
from strata_bench.workloads import (
    SINE_PRESETS,
    ArrivalProcess,
    CurvePrompts,
    DatasetPrompts,
    Fixed,
    LogNormal,
    Normal,
    Pareto,
    SinePattern,
    SyntheticPrompts,
    Uniform,
    absolute_schedule,
    arrivals_for_rates,
    exponential_ramp,
    length_distribution,
    linear_ramp,
    on_off,
    plan_constant_rate,
    plan_from_qps_series,
    plan_from_trace,
    plan_from_workload,
    plan_pattern,
    plan_sessions,
    read_aibrix_workload,
    sample_lengths,
    sine_from_pattern_file,
    sine_preset,
    with_bursts,
    workload_from_plan,
    write_aibrix_workload,
)

DATA = Path(__file__).parent / "data"
TOK = SimBenchTokenizer()


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip([0.0, *times], times, strict=False)]


def _cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


# --- arrival processes -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["poisson", "gamma", "constant", "uniform"])
def test_mean_rate_is_the_asked_rate(kind: str) -> None:
    process = ArrivalProcess(50.0, kind, burstiness=0.5)  # type: ignore[arg-type]
    times = process.times(random.Random(1), n=20_000)
    assert len(times) / times[-1] == pytest.approx(50.0, rel=0.04)


@pytest.mark.parametrize(
    ("kind", "burstiness", "cv"),
    [
        ("poisson", 1.0, 1.0),
        ("gamma", 0.25, 2.0),
        ("gamma", 1.0, 1.0),
        ("gamma", 4.0, 0.5),
        ("uniform", 1.0, 1 / math.sqrt(3)),
        ("constant", 1.0, 0.0),
    ],
)
def test_gap_variability_follows_burstiness(kind: str, burstiness: float, cv: float) -> None:
    gaps = ArrivalProcess(10.0, kind, burstiness).gaps(40_000, random.Random(2))  # type: ignore[arg-type]
    assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.04)
    assert _cv(gaps) == pytest.approx(cv, abs=0.06)


def test_burstier_gamma_clusters_more_arrivals_per_second() -> None:
    def dispersion(burstiness: float) -> float:
        times = ArrivalProcess(20.0, "gamma", burstiness).times(random.Random(3), duration_s=2000)
        counts = [0] * 2000
        for t in times:
            counts[int(t)] += 1
        return statistics.pvariance(counts) / statistics.fmean(counts)

    assert dispersion(0.2) > 2 * dispersion(1.0) > 4 * dispersion(5.0)


def test_rescale_lands_the_last_arrival_at_n_over_rate() -> None:
    times = ArrivalProcess(8.0, "gamma", 0.5).times(random.Random(4), n=100, rescale=True)
    assert times[-1] == pytest.approx(100 / 8.0)
    assert times == sorted(times)


def test_duration_bounds_the_schedule_and_the_count_is_poisson() -> None:
    times = ArrivalProcess(5.0).times(random.Random(5), duration_s=400, start_s=10)
    assert all(10 < t < 410 for t in times)
    assert abs(len(times) - 2000) < 4 * math.sqrt(2000)


def test_arrivals_are_deterministic_for_a_seed() -> None:
    process = ArrivalProcess(3.0, "gamma", 0.7)
    assert process.times(random.Random(9), n=50) == process.times(random.Random(9), n=50)
    assert process.times(random.Random(9), n=50) != process.times(random.Random(10), n=50)


def test_invalid_processes_are_rejected() -> None:
    with pytest.raises(ValueError, match="rate"):
        ArrivalProcess(0.0)
    with pytest.raises(ValueError, match="burstiness"):
        ArrivalProcess(1.0, "gamma", 0.0)
    with pytest.raises(ValueError, match="number of arrivals"):
        ArrivalProcess(1.0).times(random.Random(0))


def test_rate_curve_arrivals_follow_each_segment() -> None:
    rates = [10.0] * 200 + [0.0] * 100 + [40.0] * 200
    times = arrivals_for_rates(rates, random.Random(6))
    low = sum(1 for t in times if t < 200)
    off = sum(1 for t in times if 200 <= t < 300)
    high = sum(1 for t in times if t >= 300)
    assert off == 0
    assert abs(low - 2000) < 4 * math.sqrt(2000)
    assert abs(high - 8000) < 4 * math.sqrt(8000)
    assert max(times) < 500


def test_rate_curve_keeps_gamma_burstiness_inside_a_segment() -> None:
    times = arrivals_for_rates([25.0] * 1000, random.Random(7), kind="gamma", burstiness=0.25)
    assert _cv(_gaps(times)[1:]) == pytest.approx(2.0, abs=0.15)


def test_absolute_schedule_checks_order_and_scales() -> None:
    assert absolute_schedule([2.0, 3.0, 5.0], time_scale=0.5, rebase=True) == [0.0, 0.5, 1.5]
    with pytest.raises(ValueError, match="backwards"):
        absolute_schedule([1.0, 0.5])


# --- patterns ----------------------------------------------------------------------------


def test_sine_without_noise_is_the_aibrix_formula() -> None:
    pattern = SinePattern(mean=10, amplitude=4, period=2, noise=0, integer=False)
    values = pattern.values(100, random.Random(0))
    assert values == pytest.approx([4 * math.sin(2 * math.pi * 2 * i / 100) + 10 for i in range(100)])
    peaks = [i for i in range(1, 99) if values[i - 1] < values[i] >= values[i + 1]]
    assert len(peaks) == 2  # two full cycles over the run


def test_sine_rounds_and_only_rise_never_falls() -> None:
    values = sine_preset("quick_rising").values(300, random.Random(1))
    assert all(v == int(v) for v in values)
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert max(values) == pytest.approx(9, abs=1)  # B + A = 6 + 3


@pytest.mark.parametrize("name", sorted(SINE_PRESETS))
def test_presets_have_the_documented_amplitude_and_period(name: str) -> None:
    pattern = sine_preset(name, mean=1024)
    expected = {"quick_rising": (0.5, 5), "slow_rising": (0.5, 0.25), "slight_fluctuation": (0.1, 1)}
    ratio, period = expected.get(name, (0.5, 12))
    assert pattern.amplitude == ratio * 1024
    assert pattern.period == period
    assert pattern.noise == 0.1
    assert pattern.only_rise == name.endswith("rising")
    values = pattern.values(1200, random.Random(2))
    if not pattern.only_rise:
        assert max(values) - min(values) == pytest.approx(2 * ratio * 1024, abs=2)


def test_pattern_file_sets_cycles_from_period_length() -> None:
    config = {"fluctuate": 2, "mean": 6, "noise": 0.1, "period_len_ms": 300000, "only_rise": False}
    pattern = sine_from_pattern_file(config, duration_s=1200)
    assert (pattern.amplitude, pattern.mean, pattern.period) == (2.0, 6.0, 4.0)


def test_ramps_and_bursts() -> None:
    ramp = linear_ramp(0, 10, 10)
    assert ramp == pytest.approx([0.5 + i for i in range(10)])
    exp = exponential_ramp(1, 1024, 10)
    assert [b / a for a, b in itertools.pairwise(exp)] == pytest.approx([2.0] * 9)
    assert on_off(1, 9, on_s=2, off_s=3, duration_s=10) == [9, 9, 1, 1, 1, 9, 9, 1, 1, 1]
    assert with_bursts([1.0] * 6, [(2, 2, 7.0), (10, 5, 3.0)]) == [1, 1, 7, 7, 1, 1]


# --- length distributions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dist", "mean", "std"),
    [
        (Normal(500, 50), 500, 50),
        (LogNormal(1000, 300), 1000, 300),
        (Uniform(100, 300), 200, 200 / math.sqrt(12)),
        (Pareto(100, 10), 100, 10),
    ],
)
def test_length_distributions_hit_their_moments(
    dist: Normal | LogNormal | Uniform | Pareto, mean: float, std: float
) -> None:
    rng = random.Random(11)
    samples = [dist.sample_float(rng) for _ in range(40_000)]
    assert statistics.fmean(samples) == pytest.approx(mean, rel=0.02)
    assert statistics.pstdev(samples) == pytest.approx(std, rel=0.1)


@pytest.mark.parametrize("fit", ["moments", "aibrix"])
def test_pareto_never_goes_below_its_scale(fit: str) -> None:
    dist = Pareto(80, 472, fit)  # type: ignore[arg-type]  # AIBrix config values: heavy tail
    alpha = dist.alpha
    assert alpha > 2
    samples = sample_lengths(dist, 5000, random.Random(1))
    assert min(samples) >= math.floor(80 * (alpha - 1) / alpha)


def test_aibrix_pareto_fit_keeps_the_mean_but_not_the_spread() -> None:
    rng = random.Random(4)
    samples = [Pareto(100, 10, "aibrix").sample_float(rng) for _ in range(20_000)]
    assert statistics.fmean(samples) == pytest.approx(100, rel=0.01)
    assert statistics.pstdev(samples) == pytest.approx(1.0, rel=0.1)  # what AIBrix's generator gives


def test_lengths_are_clamped_rounded_and_seeded() -> None:
    dist = Normal(5, 10, minimum=1, maximum=8)
    samples = sample_lengths(dist, 2000, random.Random(2))
    assert set(samples) <= set(range(1, 9))
    assert {1, 8} <= set(samples)
    assert sample_lengths(dist, 50, random.Random(2)) == samples[:50]
    assert Fixed(7).sample(random.Random(0)) == 7


def test_length_distribution_from_config() -> None:
    assert length_distribution(128) == Fixed(128.0)
    assert length_distribution({"kind": "lognormal", "mean": 1000, "std": 300, "maximum": 4096}) == LogNormal(
        1000.0, 300.0, maximum=4096.0
    )
    with pytest.raises(ValueError, match="unknown"):
        length_distribution({"kind": "zipf"})
    with pytest.raises(ValueError, match="missing"):
        length_distribution({"kind": "normal", "mean": 3})


# --- builders ----------------------------------------------------------------------------


def test_constant_rate_plan_has_exact_prompts_and_the_asked_rate() -> None:
    source = SyntheticPrompts(TOK, Uniform(10, 60), Fixed(16))
    plan = plan_constant_rate(source, 20.0, num_requests=400, seed=3)
    assert [r.index for r in plan] == list(range(400))
    assert [r.at_s for r in plan] == sorted(r.at_s for r in plan)
    assert len(plan) / plan[-1].at_s == pytest.approx(20.0, rel=0.15)
    for r in plan:
        assert r.prompt is not None
        assert r.messages is None
        assert r.max_tokens == 16
        assert len(TOK.encode(r.prompt)) == r.prompt_tokens
    again = plan_constant_rate(SyntheticPrompts(TOK, Uniform(10, 60), Fixed(16)), 20.0, num_requests=400, seed=3)
    assert again == plan


def test_chat_plans_carry_messages_and_no_claimed_prompt_length() -> None:
    source = SyntheticPrompts(TOK, Fixed(12), Fixed(4))
    plan = plan_constant_rate(source, 5.0, duration_s=2.0, chat=True, headers={"routing-strategy": "random"})
    assert plan
    assert all(r.prompt is None and r.prompt_tokens is None for r in plan)
    assert all(r.messages and len(TOK.encode(r.messages[0]["content"])) == 12 for r in plan)
    assert all(r.headers == {"routing-strategy": "random"} for r in plan)


def test_shared_prefixes_in_synthetic_prompts() -> None:
    source = SyntheticPrompts(TOK, Fixed(20), Fixed(4), num_prefixes=3, prefix_tokens=50, prefix_probability=0.5)
    plan = plan_constant_rate(source, 10.0, num_requests=300, seed=1)
    grouped = [r for r in plan if r.prefix_group is not None]
    assert 100 < len(grouped) < 200
    heads: dict[int, list[int]] = {}
    for r in grouped:
        assert r.prompt is not None
        ids = TOK.encode(r.prompt)
        assert len(ids) == 70 == r.prompt_tokens
        assert heads.setdefault(r.prefix_group or 0, ids[:50]) == ids[:50]
    assert len(heads) == 3
    assert len({tuple(h) for h in heads.values()}) == 3


def test_pattern_plan_follows_the_sine_curve() -> None:
    rates = sine_preset("severe_fluctuation", mean=20).values(600, random.Random(0))
    plan = plan_pattern(SyntheticPrompts(TOK, Fixed(8), Fixed(2)), rates, seed=4)
    assert abs(len(plan) - sum(rates)) < 4 * math.sqrt(sum(rates))
    per_second = [0] * 600
    for r in plan:
        per_second[int(r.at_s)] += 1
    high = [i for i in range(600) if rates[i] >= 28]
    low = [i for i in range(600) if rates[i] <= 12]
    assert statistics.fmean(per_second[i] for i in high) > 2 * statistics.fmean(per_second[i] for i in low)


def test_qps_series_plan_scales_the_exported_rate() -> None:
    series = read_grafana_qps(DATA / "grafana_maas_traffic.csv")
    plan = plan_from_qps_series(series, SyntheticPrompts(TOK, Fixed(8), Fixed(2)), qps_scale=4, seed=2)
    expected = (100 + 80 + 0 + 40) * 10 / 4
    assert abs(len(plan) - expected) < 4 * math.sqrt(expected)
    assert not any(20 <= r.at_s < 30 for r in plan)
    head = plan_from_qps_series(series, SyntheticPrompts(TOK, Fixed(8), Fixed(2)), max_s=10)
    assert all(r.at_s < 10 for r in head)
    assert abs(len(head) - 1000) < 4 * math.sqrt(1000)


def test_trace_plan_replays_times_and_exact_lengths() -> None:
    rows = list(scale_time(read_azure(DATA / "azure_conv_2024.csv"), 2.0))
    plan = plan_from_trace(rows, TOK, seed=1)
    assert [r.at_s for r in plan] == pytest.approx([2 * r.at_s for r in read_azure(DATA / "azure_conv_2024.csv")])
    assert [r.max_tokens for r in plan] == [305, 44, 211, 57, 1]  # 0 output tokens -> 1
    assert all(r.prompt is not None and len(TOK.encode(r.prompt)) == r.prompt_tokens for r in plan)
    assert [r.prompt_tokens for r in plan] == [1020, 374, 92, 2203, 57]


def test_mooncake_plan_keeps_block_sharing_and_no_sessions() -> None:
    plan = plan_from_trace(read_mooncake(DATA / "mooncake.jsonl"), TOK, seed=5)
    ids = [TOK.encode(r.prompt or "") for r in plan]
    assert [len(x) for x in ids] == [1100, 1500, 600, 2048, 300]
    assert ids[0][:1024] == ids[1][:1024]
    assert ids[3][:1100] == ids[0]
    assert ids[4] == ids[2][:300]
    assert all(r.session_id is None for r in plan)
    assert plan_from_trace(read_mooncake(DATA / "mooncake.jsonl"), TOK, seed=5) == plan


def test_dataset_prompts_choose_output_lengths_in_priority_order() -> None:
    entries = [e for e in read_dataset(DATA / "aibrix_plain.jsonl") if isinstance(e, PromptEntry)]
    source = DatasetPrompts(entries, TOK, default_max_tokens=64)
    plan = plan_constant_rate(source, 1.0, num_requests=4)
    completion_tokens = len(TOK.encode("Gutenberg built a movable-type press around 1440."))
    assert [r.max_tokens for r in plan] == [completion_tokens, 64, 16, completion_tokens]
    assert [r.prompt for r in plan][:3] == [e.prompt for e in entries]
    assert plan[1].prompt_tokens == len(TOK.encode(entries[1].prompt))
    override = plan_constant_rate(DatasetPrompts(entries, TOK, output_lengths=Fixed(3)), 1.0, num_requests=3)
    assert {r.max_tokens for r in override} == {3}


def test_shared_dataset_groups_are_numbered_across_configs() -> None:
    entries = [e for e in read_dataset(DATA / "aibrix_shared.jsonl") if isinstance(e, SharedPromptEntry)]
    plan = plan_constant_rate(DatasetPrompts(entries), 1.0, num_requests=4)
    assert [r.prefix_group for r in plan] == [0, 0, 1, 2]
    assert [r.prompt_tokens for r in plan] == [7, 7, 6, 4]


def test_curve_prompts_follow_the_length_curve() -> None:
    source = CurvePrompts(TOK, [10, 20, 30], [1, 2, 3])
    plan = plan_pattern(source, [5.0, 5.0, 5.0, 5.0], seed=1)
    for r in plan:
        step = min(2, int(r.at_s))
        assert r.prompt_tokens == [10, 20, 30][step]
        assert r.max_tokens == [1, 2, 3][step]


# --- sessions ----------------------------------------------------------------------------


def test_session_plan_orders_turns_and_uses_think_times() -> None:
    sessions = [e for e in read_dataset(DATA / "aibrix_sessioned.jsonl") if isinstance(e, SessionEntry)]
    plan = plan_sessions(sessions, tokenizer=TOK, est_turn_s=1.0)
    by_session: dict[str, list[tuple[int, float, float]]] = {}
    for r in plan:
        assert r.messages is not None
        assert r.prompt is None
        by_session.setdefault(r.session_id or "", []).append((r.turn, r.at_s, r.think_time_s))
    assert by_session["0"] == [(0, 0.0, 0.0), (1, 1.0, 0.0), (2, 2.0, 0.0)]
    assert by_session["conv-x"] == [(0, 0.0, 0.0), (1, 3.5, 2.5)]
    answers = {(r.session_id, r.turn): r.max_tokens for r in plan}
    assert answers[("1", 0)] == len(TOK.encode("4"))
    assert answers[("0", 0)] == 128
    assert [r.index for r in plan] == list(range(len(plan)))


def test_session_cap_delays_sessions_until_a_slot_frees() -> None:
    sessions = [SessionEntry(i, ("a", "b", "c")) for i in range(6)]
    plan = plan_sessions(
        sessions, max_concurrent_sessions=2, est_turn_s=1.0, think_time_s=Fixed(2.0, minimum=0), seed=1
    )
    starts = sorted(r.at_s for r in plan if r.turn == 0)
    assert starts == [0.0, 0.0, 7.0, 7.0, 14.0, 14.0]  # 3 turns: 0, 3, 6 then answered at 7
    for t in (0.5, 7.5, 14.5):
        in_flight = {r.session_id for r in plan if r.turn == 0 and r.at_s <= t < r.at_s + 7}
        assert len(in_flight) <= 2


def test_session_arrivals_are_seeded() -> None:
    sessions = [SessionEntry(i, ("x",)) for i in range(20)]
    first = plan_sessions(sessions, session_arrivals=ArrivalProcess(2.0), seed=3)
    assert first == plan_sessions(sessions, session_arrivals=ArrivalProcess(2.0), seed=3)
    assert first != plan_sessions(sessions, session_arrivals=ArrivalProcess(2.0), seed=4)


# --- AIBrix workload files ---------------------------------------------------------------


def test_aibrix_workload_is_read_as_a_plan() -> None:
    entries = read_aibrix_workload(DATA / "aibrix_workload.jsonl")
    assert [e.timestamp_ms for e in entries] == [19, 1020, 2350]
    plan = plan_from_workload(entries)
    assert [r.at_s for r in plan] == [0.019, 1.02, 1.02, 2.35]
    assert [r.max_tokens for r in plan] == [128, 32, 16, 8]
    assert [(r.session_id, r.turn) for r in plan] == [("0", 0), (None, 0), (None, 0), ("0", 1)]
    assert plan[0].messages == [{"role": "user", "content": "first prompt"}]
    assert plan[1].prompt == "two at once a"
    assert plan[1].prompt_tokens is None
    assert plan_from_workload(entries, trust_prompt_length=True)[1].prompt_tokens == 4


@pytest.mark.parametrize("jsonl", [True, False])
def test_aibrix_workload_round_trips(tmp_path: Path, jsonl: bool) -> None:
    entries = read_aibrix_workload(DATA / "aibrix_workload.jsonl")
    write_aibrix_workload(entries, tmp_path / "w.json", jsonl=jsonl)
    assert read_aibrix_workload(tmp_path / "w.json") == entries


def test_plan_to_aibrix_groups_requests_by_millisecond() -> None:
    plan = plan_from_workload(read_aibrix_workload(DATA / "aibrix_workload.jsonl"))
    entries = workload_from_plan(plan)
    assert [(e.timestamp_ms, len(e.requests)) for e in entries] == [(19, 1), (1020, 2), (2350, 1)]
    assert entries[0].requests[0].prompt == "first prompt"
    assert entries[0].requests[0].session_id == "0"
    assert plan_from_workload(entries) == plan
