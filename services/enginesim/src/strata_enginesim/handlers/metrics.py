"""vLLM's Prometheus surface for one simulated engine, from a registry of its own.

Names, types, help texts, labels (``model_name``, ``engine="0"``) and histogram buckets
follow vLLM 0.32 (``v1/metrics/loggers.py``, ``v1/metrics/buckets.py``,
``config/cache.py`` for ``vllm:cache_config_info``) and were checked against a real
0.32 server's ``/metrics``. Many engines share a process, so each :class:`VllmMetrics`
owns a ``CollectorRegistry``; nothing goes to the process-global one.

Where the numbers come from:

* gauges and counters: read from the engine's :class:`EngineStats` at scrape time;
* request histograms: observed by the HTTP layer through :meth:`VllmMetrics.track`, from
  each request's final :class:`RequestMetrics` and the spacing of ``TokenOutput.now``;
* legacy V0 names that AIBrix v0.3.0 still scrapes (``vllm:gpu_cache_usage_perc``,
  throughput gauges, ``vllm:time_per_output_token_seconds``, ...), derived from the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from strata_enginesim.domain.types import TokenOutput
from strata_enginesim.handlers.metrics_stats import LABELS, EngineView, StatsCollector, Throughput, cache_config_info

__all__ = ["RequestTracker", "VllmMetrics", "request_token_buckets"]

_REQUEST_LATENCY: Final = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
_TTFT: Final = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
_ITL: Final = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)  # fmt: skip
_ITERATION_TOKENS: Final = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
_PARAMS_N: Final = (1, 2, 5, 10, 20)
_PREEMPTIONS: Final = (1, 2, 3, 4, 5, 10, 20)


def request_token_buckets(max_model_len: int) -> list[float]:
    """vLLM's 1-2-5 series capped at `max_model_len` (the ``request_tokens`` bucket family)."""
    out: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_model_len:
                return out
            out.append(mantissa * scale)
        scale *= 10


class _Histograms:
    """The per-request histograms of one engine, already bound to its label values."""

    def __init__(self, registry: CollectorRegistry, labels: tuple[str, str], max_model_len: int) -> None:
        tokens = request_token_buckets(max_model_len)

        def hist(name: str, doc: str, buckets: Iterable[float]) -> Histogram:
            family = Histogram(name, doc, LABELS, buckets=tuple(buckets), registry=registry)
            return family.labels(*labels)

        self.prompt_tokens = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens)
        self.generation_tokens = hist(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", tokens
        )
        self.iteration_tokens = hist(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", _ITERATION_TOKENS
        )
        self.max_num_generation_tokens = hist(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            tokens,
        )
        self.params_n = hist("vllm:request_params_n", "Histogram of the n request parameter.", _PARAMS_N)
        self.params_max_tokens = hist(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", tokens
        )
        self.ttft = hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", _TTFT)
        self.itl = hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", _ITL)
        self.tpot = hist(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            _ITL,
        )
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", _REQUEST_LATENCY
        )
        self.queue = hist(
            "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", _REQUEST_LATENCY
        )
        self.inference = hist(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            _REQUEST_LATENCY,
        )
        self.prefill = hist(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            _REQUEST_LATENCY,
        )
        self.decode = hist(
            "vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", _REQUEST_LATENCY
        )
        self.num_preemptions = hist(
            "vllm:request_num_preemptions", "Histogram of the number of times a request was preempted.", _PREEMPTIONS
        )
        self.prefill_kv_computed = hist(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            tokens,
        )
        # Legacy (vLLM <= 0.10): the per-token latency under its old name, for AIBrix v0.3.0.
        self.legacy_tpot = hist(
            "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", _ITL
        )


class RequestTracker:
    """Feeds one request's outputs into the histograms; one per request, call :meth:`observe` per output."""

    __slots__ = ("_hist", "_last_now")

    def __init__(self, hist: _Histograms) -> None:
        self._hist = hist
        self._last_now: float | None = None

    def observe(self, output: TokenOutput) -> None:
        """Record the inter-token gap (after the first token) and, on the final output, the request."""
        hist = self._hist
        if output.token_ids:
            if self._last_now is not None:
                gap = output.now - self._last_now
                hist.itl.observe(gap)
                hist.legacy_tpot.observe(gap)
            self._last_now = output.now
        m = output.metrics
        if m is None:
            return
        hist.ttft.observe(m.ttft_s)
        hist.e2e.observe(m.e2e_s)
        hist.queue.observe(m.queue_s)
        hist.prefill.observe(m.prefill_s)
        hist.inference.observe(m.inference_s)
        hist.decode.observe(m.decode_s)
        hist.num_preemptions.observe(m.num_preemptions)
        hist.prefill_kv_computed.observe(m.prompt_tokens - max(output.num_cached_tokens, 0))
        hist.prompt_tokens.observe(m.prompt_tokens)
        hist.generation_tokens.observe(m.generation_tokens)
        hist.tpot.observe(m.decode_s / (m.generation_tokens - 1) if m.generation_tokens > 1 else 0.0)
        hist.params_n.observe(1)
        hist.max_num_generation_tokens.observe(m.max_tokens)
        if m.max_tokens:
            hist.params_max_tokens.observe(m.max_tokens)


class _Part:
    """A registry collector that yields one part of :class:`StatsCollector`."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class VllmMetrics:
    """vLLM's ``/metrics`` for one engine.

    Args:
        engine: the engine whose ``stats``, ``block_size``, ``num_blocks`` and
            ``max_model_len`` are reported (stats are read at every scrape).
        model_name: the served model name (label ``model_name``).
        engine_index: label ``engine`` (vLLM's data-parallel rank; "0" without DP).
        enable_prefix_caching: reported in ``vllm:cache_config_info``.
        prefix_caching_hash_algo: reported in ``vllm:cache_config_info``.
        cache_config: more ``vllm:cache_config_info`` labels (override the defaults,
            e.g. ``kv_cache_memory_bytes`` or ``kv_offloading_backend``).
        clock: seconds clock for the legacy throughput gauges (the engine's clock when it
            runs scaled time).
        throughput_window_s: span the throughput gauges average over (V0 logged every 10 s).
    """

    def __init__(
        self,
        engine: EngineView,
        model_name: str,
        *,
        engine_index: int = 0,
        enable_prefix_caching: bool = True,
        prefix_caching_hash_algo: str = "sha256",
        cache_config: Mapping[str, object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        throughput_window_s: float = 10.0,
    ) -> None:
        labels = (model_name, str(engine_index))
        info = cache_config_info(engine, enable_prefix_caching, prefix_caching_hash_algo)
        info.update({k: str(v) for k, v in (cache_config or {}).items()})
        info["engine"] = labels[1]
        stats = StatsCollector(engine, labels, info, Throughput(clock, throughput_window_s))
        self.registry = CollectorRegistry()
        self.registry.register(_Part(stats.collect))
        self._histograms = _Histograms(self.registry, labels, engine.max_model_len)  # registered here
        self.registry.register(_Part(stats.collect_tail))

    def track(self) -> RequestTracker:
        """A tracker for one new request."""
        return RequestTracker(self._histograms)

    def render(self) -> bytes:
        """The text exposition of this engine's registry."""
        return generate_latest(self.registry)

    def add_route(self, app: web.Application, path: str = "/metrics") -> None:
        """Serve :meth:`render` on ``GET path`` of `app`."""

        async def handler(_: web.Request) -> web.Response:
            return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app.router.add_get(path, handler)
