"""From /metrics families to EngineLoad: V1 and V0 names, DP aggregation, rates."""

from __future__ import annotations

from pathlib import Path

import pytest

from strata_engineagent.domain.load import (
    WANTED_SAMPLES,
    CacheConfig,
    LoadTracker,
    MetricsSnapshot,
    NotEngineMetrics,
    snapshot_from,
)
from strata_engineagent.domain.promtext import parse_families

SAMPLE = (Path(__file__).parent.parent / "data" / "vllm_0_32_metrics.txt").read_text()


def snap_of(text: str) -> MetricsSnapshot:
    return snapshot_from(parse_families(text, WANTED_SAMPLES))


def test_vllm_032_page() -> None:
    snap = snap_of(SAMPLE)

    assert (snap.running, snap.waiting) == (1, 2)
    assert snap.kv_usage == pytest.approx(0.0234375)
    assert (snap.prompt_tokens, snap.generation_tokens) == (6010.0, 96.0)
    assert (snap.prefix_queries, snap.prefix_hits, snap.preemptions) == (6010.0, 2688.0, 3.0)
    assert snap.cache == CacheConfig(block_size=128, num_gpu_blocks=4096, hash_algo="sha256_cbor", prefix_caching=True)


def test_data_parallel_ranks_are_summed_and_usage_averaged() -> None:
    text = "\n".join(
        [
            'vllm:num_requests_running{engine="0",model_name="m"} 3',
            'vllm:num_requests_running{engine="1",model_name="m"} 4',
            'vllm:num_requests_waiting{engine="0",model_name="m"} 1',
            'vllm:num_requests_waiting{engine="1",model_name="m"} 0',
            'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2',
            'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.6',
            'vllm:prompt_tokens_total{engine="0",model_name="m"} 100',
            'vllm:prompt_tokens_total{engine="1",model_name="m"} 50',
        ]
    )

    snap = snap_of(text)

    assert (snap.running, snap.waiting, snap.prompt_tokens) == (7, 1, 150.0)
    assert snap.kv_usage == pytest.approx(0.4)


def test_legacy_v0_names_are_accepted_when_v1_ones_are_missing() -> None:
    text = "\n".join(
        [
            'vllm:num_requests_running{model_name="m"} 2',
            'vllm:num_requests_waiting{model_name="m"} 5',
            'vllm:gpu_cache_usage_perc{model_name="m"} 0.75',
            'vllm:avg_prompt_throughput_toks_per_s{model_name="m"} 1200.5',
            'vllm:avg_generation_throughput_toks_per_s{model_name="m"} 80.25',
            'vllm:gpu_prefix_cache_hit_rate{model_name="m"} 0.4',
        ]
    )

    load = LoadTracker("e1").observe(snap_of(text), ts=1.0, mono=1.0)

    assert (load.running, load.waiting, load.kv_usage) == (2, 5, 0.75)
    assert (load.prompt_tps, load.generation_tps) == (1200.5, 80.25)
    assert load.prefix_hit_rate == pytest.approx(0.4)


def test_v1_usage_wins_over_v0_usage() -> None:
    text = "vllm:num_requests_running 0\nvllm:gpu_cache_usage_perc 0.9\nvllm:kv_cache_usage_perc 0.1"

    assert snap_of(text).kv_usage == pytest.approx(0.1)


def test_v0_prefix_counters_without_total_suffix() -> None:
    text = "vllm:num_requests_running 0\nvllm:gpu_prefix_cache_queries 10\nvllm:gpu_prefix_cache_hits 4"

    snap = snap_of(text)

    assert (snap.prefix_queries, snap.prefix_hits) == (10.0, 4.0)


@pytest.mark.parametrize("text", ["", "process_resident_memory_bytes 1e6", "sglang:num_running_reqs 3"])
def test_a_page_without_request_gauges_is_not_engine_metrics(text: str) -> None:
    with pytest.raises(NotEngineMetrics):
        snap_of(text)


def test_usage_is_clamped_and_nan_ignored() -> None:
    assert snap_of("vllm:num_requests_running 0\nvllm:kv_cache_usage_perc 1.3").kv_usage == 1.0
    assert snap_of("vllm:num_requests_running NaN\nvllm:num_requests_waiting 2").running == 0


def counters(prompt: float, gen: float, queries: float, hits: float, preempt: float) -> MetricsSnapshot:
    return MetricsSnapshot(
        running=1,
        waiting=0,
        kv_usage=0.5,
        prompt_tokens=prompt,
        generation_tokens=gen,
        prefix_queries=queries,
        prefix_hits=hits,
        preemptions=preempt,
    )


def test_first_scrape_has_no_rates() -> None:
    load = LoadTracker("e1").observe(counters(100, 10, 100, 50, 2), ts=10.0, mono=5.0)

    assert (load.seq, load.prompt_tps, load.generation_tps, load.preemptions) == (0, 0.0, 0.0, 0)
    assert load.prefix_hit_rate is None
    assert load.healthy
    assert load.ts == 10.0


def test_rates_are_deltas_over_elapsed_monotonic_time() -> None:
    tracker = LoadTracker("e1")
    tracker.observe(counters(100, 10, 100, 50, 2), ts=10.0, mono=5.0)

    load = tracker.observe(counters(600, 60, 500, 350, 5), ts=10.5, mono=5.5)

    assert load.seq == 1
    assert load.prompt_tps == pytest.approx(1000.0)
    assert load.generation_tps == pytest.approx(100.0)
    assert load.prefix_hit_rate == pytest.approx(300 / 400)
    assert load.preemptions == 3


def test_counter_reset_counts_from_zero() -> None:
    tracker = LoadTracker("e1")
    tracker.observe(counters(1000, 100, 1000, 500, 9), ts=0.0, mono=0.0)

    load = tracker.observe(counters(200, 20, 100, 25, 1), ts=1.0, mono=1.0)

    assert (load.prompt_tps, load.generation_tps, load.preemptions) == (200.0, 20.0, 1)
    assert load.prefix_hit_rate == pytest.approx(0.25)


def test_no_new_queries_means_unknown_hit_rate() -> None:
    tracker = LoadTracker("e1")
    tracker.observe(counters(1, 1, 100, 50, 0), ts=0.0, mono=0.0)

    assert tracker.observe(counters(1, 1, 100, 50, 0), ts=1.0, mono=1.0).prefix_hit_rate is None


def test_failed_scrape_is_unhealthy_with_last_gauges_and_no_rates() -> None:
    tracker = LoadTracker("e1")
    tracker.observe(counters(100, 10, 100, 50, 2), ts=0.0, mono=0.0)

    load = tracker.failed(ts=3.0)

    assert not load.healthy
    assert (load.seq, load.running, load.kv_usage, load.prompt_tps, load.preemptions) == (1, 1, 0.5, 0.0, 0)
    assert load.ts == 3.0


def test_failed_before_any_success() -> None:
    load = LoadTracker("e1").failed(ts=1.0)

    assert (load.healthy, load.running, load.waiting, load.kv_usage) == (False, 0, 0, 0.0)
