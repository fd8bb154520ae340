"""VllmMetrics: vLLM 0.32's /metrics families, labels and buckets, fed by EngineStats and request outputs.

Golden vectors: ``REAL_FAMILIES`` and ``REAL_CACHE_CONFIG_LABELS`` were read from a real
vLLM 0.32.0 server's ``/metrics``; the bucket lists are those of ``vllm/v1/metrics/buckets.py``.
"""

from __future__ import annotations

import prometheus_client
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from strata_enginesim.domain.types import EngineStats, FinishReason, RequestMetrics, TokenOutput
from strata_enginesim.handlers.metrics import VllmMetrics, request_token_buckets

REAL_FAMILIES = {
    "vllm:estimated_flops_per_gpu": "counter", "vllm:estimated_read_bytes_per_gpu": "counter",
    "vllm:estimated_write_bytes_per_gpu": "counter", "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge", "vllm:num_requests_waiting_by_reason": "gauge",
    "vllm:engine_sleep_state": "gauge", "vllm:kv_cache_usage_perc": "gauge", "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter", "vllm:external_prefix_cache_queries": "counter",
    "vllm:external_prefix_cache_hits": "counter", "vllm:mm_cache_queries": "counter", "vllm:mm_cache_hits": "counter",
    "vllm:num_preemptions": "counter", "vllm:prompt_tokens": "counter", "vllm:prompt_tokens_by_source": "counter",
    "vllm:prompt_tokens_cached": "counter", "vllm:prompt_tokens_cached_by_source": "counter",
    "vllm:generation_tokens": "counter", "vllm:request_success": "counter", "vllm:admission_rejections": "counter",
    "vllm:request_prompt_tokens": "histogram", "vllm:request_generation_tokens": "histogram",
    "vllm:iteration_tokens_total": "histogram", "vllm:request_max_num_generation_tokens": "histogram",
    "vllm:request_params_n": "histogram", "vllm:request_params_max_tokens": "histogram",
    "vllm:time_to_first_token_seconds": "histogram", "vllm:inter_token_latency_seconds": "histogram",
    "vllm:request_time_per_output_token_seconds": "histogram", "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram", "vllm:request_inference_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram", "vllm:request_decode_time_seconds": "histogram",
    "vllm:request_num_preemptions": "histogram", "vllm:request_prefill_kv_computed_tokens": "histogram",
    "vllm:cache_config_info": "gauge",
}  # fmt: skip
LEGACY_FAMILIES = {  # V0-era names AIBrix v0.3.0 scrapes (absent from real 0.32)
    "vllm:gpu_cache_usage_perc": "gauge", "vllm:cpu_cache_usage_perc": "gauge", "vllm:num_requests_swapped": "gauge",
    "vllm:avg_prompt_throughput_toks_per_s": "gauge", "vllm:avg_generation_throughput_toks_per_s": "gauge",
    "vllm:gpu_prefix_cache_hit_rate": "gauge", "vllm:gpu_prefix_cache_queries": "counter",
    "vllm:gpu_prefix_cache_hits": "counter", "vllm:time_per_output_token_seconds": "histogram",
}  # fmt: skip
REAL_CACHE_CONFIG_LABELS = {
    "_block_size_resolved", "block_size", "cache_dtype", "cache_hit_alignment_tokens", "effective_attention_block_size",
    "enable_mamba_shared_prefix_checkpoint", "enable_prefix_caching", "engine", "gpu_memory_utilization",
    "hash_block_size", "is_attention_free", "kv_cache_dtype_skip_layers", "kv_cache_layout", "kv_cache_max_concurrency",
    "kv_cache_memory_bytes", "kv_cache_size_tokens", "kv_offloading_backend", "kv_offloading_size",
    "kv_sharing_fast_prefill", "mamba_block_size", "mamba_cache_dtype", "mamba_cache_mode", "mamba_page_size_padded",
    "mamba_ssm_cache_dtype", "num_cpu_blocks", "num_gpu_blocks", "num_gpu_blocks_override",
    "prefix_cache_retention_interval", "prefix_caching_hash_algo", "prefix_match_unit", "replayssm_buffer_len",
    "skip_page_size_padded", "sliding_window", "swa_bounded_replay", "use_kda_recoverssm", "use_replayssm",
    "user_specified_block_size",
}  # fmt: skip
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
ITL_BUCKETS = [
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
]
LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                   480.0, 960.0, 1920.0, 7680.0]  # fmt: skip
LABELS = {"engine": "0", "model_name": "tiny"}


class StatsEngine:
    """Just what VllmMetrics reads from an engine."""

    model_name = "tiny"
    max_model_len = 4096
    block_size = 16
    num_blocks = 1000

    def __init__(self) -> None:
        self.stats = EngineStats()


def parse(metrics: VllmMetrics) -> dict[str, prometheus_client.Metric]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def value(families: dict[str, prometheus_client.Metric], sample: str, **labels: str) -> float:
    family = families[sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")]
    wanted = {**LABELS, **labels}
    matches = [s for s in family.samples if s.name == sample and s.labels == wanted]
    assert len(matches) == 1, (sample, wanted, family.samples)
    return matches[0].value


def buckets(families: dict[str, prometheus_client.Metric], name: str) -> list[float]:
    return [float(s.labels["le"]) for s in families[name].samples if s.name == f"{name}_bucket"][:-1]


def output(token: int, now: float, *, last: bool = False, cached: int = 0) -> TokenOutput:
    metrics = RequestMetrics(0.1, 0.5, 0.4, 0.9, 1.4, 1.3, 100, 4, 1, 64) if last else None
    return TokenOutput([token], FinishReason.LENGTH if last else None, cached, 100, now, metrics)


def test_every_vllm_family_is_exported_with_its_type_and_labels() -> None:
    families = parse(VllmMetrics(StatsEngine(), "tiny"))
    exported = {name: f.type for name, f in families.items() if not name.endswith("_created")}
    assert exported == {**REAL_FAMILIES, **LEGACY_FAMILIES}  # plus a `_created` gauge per counter/histogram
    for name, family in families.items():
        if not name.startswith(("vllm:admission_rejections", "vllm:cache_config_info")):  # as in vLLM
            assert all(LABELS.items() <= s.labels.items() for s in family.samples), name
    assert {s.labels["reason"] for s in families["vllm:admission_rejections"].samples} == {
        "max_num_queued_reqs",
        "max_num_queued_tokens",
    }


def test_counters_and_gauges_follow_engine_stats() -> None:
    engine = StatsEngine()
    metrics = VllmMetrics(engine, "tiny")
    s = engine.stats
    s.num_running, s.num_waiting, s.kv_cache_usage = 3, 2, 0.25
    s.prefix_cache_queries, s.prefix_cache_hits, s.prompt_tokens, s.generation_tokens = 1000, 640, 1260, 73
    s.num_preemptions, s.request_success = 1, {"length": 22, "stop": 3}
    f = parse(metrics)
    assert value(f, "vllm:num_requests_running") == 3
    assert value(f, "vllm:num_requests_waiting_by_reason", reason="capacity") == 2
    assert value(f, "vllm:kv_cache_usage_perc") == 0.25
    assert value(f, "vllm:prefix_cache_queries_total") == 1000
    assert value(f, "vllm:prefix_cache_hits_total") == 640
    assert value(f, "vllm:prompt_tokens_total") == 1260
    assert value(f, "vllm:prompt_tokens_by_source_total", source="local_compute") == 620
    assert value(f, "vllm:prompt_tokens_cached_by_source_total", source="device") == 640
    assert value(f, "vllm:generation_tokens_total") == 73
    assert value(f, "vllm:num_preemptions_total") == 1
    assert value(f, "vllm:request_success_total", finished_reason="length") == 22
    assert value(f, "vllm:request_success_total", finished_reason="abort") == 0
    assert value(f, "vllm:engine_sleep_state", sleep_state="awake") == 1
    s.generation_tokens = 80
    assert value(parse(metrics), "vllm:generation_tokens_total") == 80  # read at every scrape


def test_histograms_use_vllm_buckets() -> None:
    families = parse(VllmMetrics(StatsEngine(), "tiny"))
    assert buckets(families, "vllm:time_to_first_token_seconds") == TTFT_BUCKETS
    assert buckets(families, "vllm:inter_token_latency_seconds") == ITL_BUCKETS
    assert buckets(families, "vllm:e2e_request_latency_seconds") == LATENCY_BUCKETS
    assert buckets(families, "vllm:request_prompt_tokens") == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]
    assert request_token_buckets(100) == [1, 2, 5, 10, 20, 50, 100]


def test_tracker_observes_token_spacing_and_request_timings() -> None:
    metrics = VllmMetrics(StatsEngine(), "tiny")
    tracker = metrics.track()
    for out in (output(10, 1.0), output(11, 1.25), output(12, 1.5), output(13, 1.9, last=True, cached=96)):
        tracker.observe(out)
    f = parse(metrics)
    assert value(f, "vllm:inter_token_latency_seconds_count") == 3
    assert value(f, "vllm:inter_token_latency_seconds_sum") == pytest.approx(0.9)
    assert value(f, "vllm:time_per_output_token_seconds_count") == 3  # legacy name, same samples
    assert value(f, "vllm:time_to_first_token_seconds_sum") == pytest.approx(0.5)
    assert value(f, "vllm:e2e_request_latency_seconds_sum") == pytest.approx(1.4)
    assert value(f, "vllm:request_queue_time_seconds_sum") == pytest.approx(0.1)
    assert value(f, "vllm:request_decode_time_seconds_sum") == pytest.approx(0.9)
    assert value(f, "vllm:request_time_per_output_token_seconds_sum") == pytest.approx(0.3)
    assert value(f, "vllm:request_prefill_kv_computed_tokens_sum") == 4
    assert value(f, "vllm:request_generation_tokens_sum") == 4
    assert value(f, "vllm:request_params_max_tokens_sum") == 64
    assert value(f, "vllm:request_num_preemptions_sum") == 1
    assert value(f, "vllm:request_params_n_count") == 1


def test_cache_config_info_describes_the_engine() -> None:
    metrics = VllmMetrics(
        StatsEngine(), "tiny", prefix_caching_hash_algo="xxhash", cache_config={"kv_offloading_backend": "lmcache"}
    )
    [sample] = parse(metrics)["vllm:cache_config_info"].samples
    assert set(sample.labels) == REAL_CACHE_CONFIG_LABELS
    assert sample.value == 1
    labels = sample.labels
    assert (labels["block_size"], labels["num_gpu_blocks"], labels["kv_cache_size_tokens"]) == ("16", "1000", "16000")
    assert (labels["enable_prefix_caching"], labels["prefix_caching_hash_algo"]) == ("True", "xxhash")
    assert (labels["engine"], labels["kv_offloading_backend"]) == ("0", "lmcache")


def test_legacy_names_track_the_current_ones() -> None:
    engine = StatsEngine()
    clock = iter([100.0, 110.0])
    metrics = VllmMetrics(engine, "tiny", clock=lambda: next(clock))
    parse(metrics)  # first scrape: the throughput window starts
    s = engine.stats
    s.kv_cache_usage, s.prefix_cache_queries, s.prefix_cache_hits = 0.5, 200, 50
    s.prompt_tokens, s.generation_tokens = 1000, 300
    f = parse(metrics)
    assert value(f, "vllm:gpu_cache_usage_perc") == 0.5
    assert value(f, "vllm:num_requests_swapped") == 0
    assert value(f, "vllm:gpu_prefix_cache_hit_rate") == 0.25
    assert value(f, "vllm:gpu_prefix_cache_hits_total") == 50
    assert value(f, "vllm:avg_prompt_throughput_toks_per_s") == 100
    assert value(f, "vllm:avg_generation_throughput_toks_per_s") == 30


def test_each_engine_has_its_own_registry() -> None:
    before = {m.name for m in prometheus_client.REGISTRY.collect()}
    first, second = VllmMetrics(StatsEngine(), "a"), VllmMetrics(StatsEngine(), "b", engine_index=1)
    first.track().observe(output(1, 0.0, last=True))
    assert value(parse(first), "vllm:e2e_request_latency_seconds_count", model_name="a") == 1
    samples: list[Sample] = parse(second)["vllm:e2e_request_latency_seconds"].samples
    count = [s for s in samples if s.name.endswith("_count")]
    assert [(s.labels, s.value) for s in count] == [({"engine": "1", "model_name": "b"}, 0)]
    assert {m.name for m in prometheus_client.REGISTRY.collect()} == before


async def test_add_route_serves_the_exposition() -> None:
    metrics = VllmMetrics(StatsEngine(), "tiny")
    app = web.Application()
    metrics.add_route(app)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == prometheus_client.CONTENT_TYPE_LATEST
        assert "vllm:num_requests_running" in await resp.text()
