"""The gauges and counters of vLLM's ``/metrics``, computed from EngineStats at scrape time.

Families, help texts and label sets are vLLM 0.32's (``v1/metrics/loggers.py``;
``vllm:cache_config_info`` carries ``CacheConfig.metrics_info()`` from ``config/cache.py``),
plus the V0-era names AIBrix v0.3.0 still scrapes, derived from the same stats.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from strata_enginesim.domain.types import EngineStats

__all__ = ["LABELS", "EngineView", "StatsCollector", "Throughput", "cache_config_info"]

LABELS: Final = ("model_name", "engine")
_FINISH_REASONS: Final = ("stop", "length", "abort", "error", "repetition")
_CACHED_SOURCES: Final = ("device", "host", "p2p", "disk", "external_unspecified")
_ADMISSION_REASONS: Final = ("max_num_queued_reqs", "max_num_queued_tokens")


class EngineView(Protocol):
    """What the metrics read from an engine (every EngineCore is one)."""

    max_model_len: int
    block_size: int
    num_blocks: int
    stats: EngineStats


class Throughput:
    """Token rates over a sliding window of scrape-time samples (V0's avg_*_throughput gauges)."""

    def __init__(self, clock: Callable[[], float], window_s: float) -> None:
        self._clock = clock
        self._window_s = window_s
        self._samples: deque[tuple[float, int, int]] = deque()

    def rates(self, prompt_tokens: int, generation_tokens: int) -> tuple[float, float]:
        now = self._clock()
        self._samples.append((now, prompt_tokens, generation_tokens))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window_s:
            self._samples.popleft()
        then, prompt0, gen0 = self._samples[0]
        elapsed = now - then
        if elapsed <= 0:
            return 0.0, 0.0
        return (prompt_tokens - prompt0) / elapsed, (generation_tokens - gen0) / elapsed


class StatsCollector:
    """Gauges and counters computed from EngineStats at scrape time.

    Two parts, so that the exposition keeps vLLM's order around the histograms (which the
    registry emits between them): :meth:`collect` (vLLM's gauges and counters) and
    :meth:`collect_tail` (``vllm:cache_config_info`` and the legacy V0 names).
    """

    def __init__(
        self, engine: EngineView, labels: tuple[str, str], info: dict[str, str], throughput: Throughput
    ) -> None:
        self._engine = engine
        self._labels = labels
        self._info = info
        self._throughput = throughput
        self._created = time.time()

    def collect(self) -> Iterable[Metric]:
        """vLLM's gauges and counters, in its registration order."""
        s: EngineStats = self._engine.stats
        hits = s.prefix_cache_hits
        for what, doc in (
            ("flops", "floating point operations"),
            ("read_bytes", "bytes read from memory"),
            ("write_bytes", "bytes written to memory"),
        ):
            yield self._counter(
                f"vllm:estimated_{what}_per_gpu",
                f"Estimated number of {doc} per GPU (for Model Flops Utilization calculations).",
                0,
            )
        yield self._gauge("vllm:num_requests_running", "Number of requests in model execution batches.", s.num_running)
        yield self._gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", s.num_waiting)
        yield self._gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; "
            "'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). "
            "Sum of all reasons equals vllm:num_requests_waiting.",
            {("capacity",): s.num_waiting, ("deferred",): 0},
            "reason",
        )
        yield self._gauge(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
            "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            {("awake",): 1, ("weights_offloaded",): 0, ("discard_all",): 0},
            "sleep_state",
        )
        yield self._gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", s.kv_cache_usage)
        yield self._counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            s.prefix_cache_queries,
        )
        yield self._counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", hits)
        yield self._counter(
            "vllm:external_prefix_cache_queries",
            "External prefix cache queries from KV connector cross-instance cache sharing, "
            "in terms of number of queried tokens.",
            s.external_queries,
        )
        yield self._counter(
            "vllm:external_prefix_cache_hits",
            "External prefix cache hits from KV connector cross-instance cache sharing, "
            "in terms of number of cached tokens.",
            s.external_hits,
        )
        yield self._counter(
            "vllm:mm_cache_queries", "Multi-modal cache queries, in terms of number of queried items.", 0
        )
        yield self._counter("vllm:mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items.", 0)
        yield self._counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine.", s.num_preemptions
        )
        yield self._counter("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens)
        computed = max(s.prompt_tokens - hits - s.external_hits, 0)
        by_source: dict[tuple[str, ...], float] = {
            ("local_compute",): computed,
            ("local_cache_hit",): hits,
            ("external_kv_transfer",): s.external_hits,
        }
        yield self._counter("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.", by_source, "source")
        yield self._counter(
            "vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).", hits + s.external_hits
        )
        yield self._counter(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host (offloaded to "
            "DRAM), disk, p2p (transferred from another vLLM instance) or external_unspecified. Counted at "
            "admission; sums to vllm:prefix_cache_hits + vllm:external_prefix_cache_hits.",
            {(src,): {"device": hits, "host": s.external_hits}.get(src, 0) for src in _CACHED_SOURCES},
            "source",
        )
        yield self._counter("vllm:generation_tokens", "Number of generation tokens processed.", s.generation_tokens)
        yield self._counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            {(r,): s.request_success.get(r, 0) for r in _FINISH_REASONS},
            "finished_reason",
        )
        rejections = CounterMetricFamily(
            "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            labels=("model_name", "reason"),
        )
        for reason in _ADMISSION_REASONS:
            rejections.add_metric((self._labels[0], reason), 0, created=self._created)
        yield rejections

    def collect_tail(self) -> Iterable[Metric]:
        """``vllm:cache_config_info``, then the V0-era names."""
        info = GaugeMetricFamily(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig", labels=tuple(self._info)
        )
        info.add_metric(tuple(self._info.values()), 1)
        yield info
        s: EngineStats = self._engine.stats
        prompt_rate, gen_rate = self._throughput.rates(s.prompt_tokens, s.generation_tokens)
        hit_rate = s.prefix_cache_hits / s.prefix_cache_queries if s.prefix_cache_queries else 0.0
        yield self._gauge(
            "vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", s.kv_cache_usage
        )
        yield self._gauge("vllm:cpu_cache_usage_perc", "CPU KV-cache usage. 1 means 100 percent usage.", 0)
        yield self._gauge("vllm:num_requests_swapped", "Number of requests swapped to CPU.", 0)
        yield self._gauge(
            "vllm:avg_prompt_throughput_toks_per_s", "Average prefill throughput in tokens/s.", prompt_rate
        )
        yield self._gauge(
            "vllm:avg_generation_throughput_toks_per_s", "Average generation throughput in tokens/s.", gen_rate
        )
        yield self._gauge("vllm:gpu_prefix_cache_hit_rate", "GPU prefix cache block hit rate.", hit_rate)
        yield self._counter(
            "vllm:gpu_prefix_cache_queries",
            "GPU prefix cache queries, in terms of number of queried tokens.",
            s.prefix_cache_queries,
        )
        yield self._counter(
            "vllm:gpu_prefix_cache_hits",
            "GPU prefix cache hits, in terms of number of cached tokens.",
            s.prefix_cache_hits,
        )

    def _gauge(
        self, name: str, doc: str, value: float | Mapping[tuple[str, ...], float], extra_label: str | None = None
    ) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=(*LABELS, *((extra_label,) if extra_label else ())))
        for extra, v in _by_label(value):
            family.add_metric((*self._labels, *extra), v)
        return family

    def _counter(
        self, name: str, doc: str, value: float | Mapping[tuple[str, ...], float], extra_label: str | None = None
    ) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=(*LABELS, *((extra_label,) if extra_label else ())))
        for extra, v in _by_label(value):
            family.add_metric((*self._labels, *extra), v, created=self._created)
        return family


def _by_label(value: float | Mapping[tuple[str, ...], float]) -> Iterable[tuple[tuple[str, ...], float]]:
    return value.items() if isinstance(value, Mapping) else [((), value)]


def cache_config_info(engine: EngineView, enable_prefix_caching: bool, hash_algo: str) -> dict[str, str]:
    """vLLM 0.32's ``CacheConfig.metrics_info()`` labels, in its field order, for the simulated engine."""
    tokens = engine.block_size * engine.num_blocks
    values: dict[str, object] = {
        "block_size": engine.block_size,
        "user_specified_block_size": True,
        "kv_cache_layout": None,
        "prefix_match_unit": None,
        "gpu_memory_utilization": 0.92,
        "cache_dtype": "auto",
        "is_attention_free": False,
        "num_gpu_blocks_override": None,
        "sliding_window": None,
        "enable_prefix_caching": enable_prefix_caching,
        "prefix_caching_hash_algo": str(hash_algo),
        "prefix_cache_retention_interval": 0,
        "kv_cache_dtype_skip_layers": [],
        "mamba_page_size_padded": None,
        "skip_page_size_padded": None,
        "mamba_block_size": None,
        "mamba_cache_dtype": "auto",
        "mamba_ssm_cache_dtype": "float32",
        "mamba_cache_mode": "none",
        "enable_mamba_shared_prefix_checkpoint": False,
        "replayssm_buffer_len": 16,
        "use_replayssm": False,
        "use_kda_recoverssm": False,
        "num_gpu_blocks": engine.num_blocks,
        "num_cpu_blocks": None,
        "effective_attention_block_size": engine.block_size,
        "kv_cache_size_tokens": tokens,
        "kv_cache_max_concurrency": tokens / engine.max_model_len,
        "hash_block_size": None,
        "cache_hit_alignment_tokens": None,
        "kv_sharing_fast_prefill": False,
        "swa_bounded_replay": True,
        "kv_cache_memory_bytes": None,
        "kv_offloading_size": None,
        "kv_offloading_backend": "native",
        "_block_size_resolved": True,
    }
    return {k: str(v) for k, v in values.items()}
