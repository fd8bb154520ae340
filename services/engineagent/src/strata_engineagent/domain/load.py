"""From parsed `/metrics` families to EngineLoad snapshots with rates.

vLLM labels every sample with `engine` (the data-parallel rank) and `model_name`;
the agent reports one load per engine URL, so counts and counters are summed over
all samples of a family and KV usage is averaged. V1 names are preferred; the V0
names some engines (and AIBrix-compatible simulators) still export are fallbacks.

Counters become rates against the previous successful scrape:

    rate = (value_now - value_prev) / (t_now - t_prev)     (a decrease = counter reset: value_now)

The first scrape has no previous one: its rates are 0 and its hit rate unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from strata_contracts.messages import EngineLoad
from strata_engineagent.domain.promtext import Sample

__all__ = [
    "WANTED_SAMPLES",
    "CacheConfig",
    "LoadTracker",
    "MetricsSnapshot",
    "NotEngineMetrics",
    "snapshot_from",
]

_RUNNING: Final = ("vllm:num_requests_running",)
_WAITING: Final = ("vllm:num_requests_waiting",)
_KV_USAGE: Final = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_PROMPT: Final = ("vllm:prompt_tokens_total", "vllm:prompt_tokens")
_GENERATION: Final = ("vllm:generation_tokens_total", "vllm:generation_tokens")
_QUERIES: Final = (
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_queries",
    "vllm:gpu_prefix_cache_queries_total",
    "vllm:gpu_prefix_cache_queries",
)
_HITS: Final = (
    "vllm:prefix_cache_hits_total",
    "vllm:prefix_cache_hits",
    "vllm:gpu_prefix_cache_hits_total",
    "vllm:gpu_prefix_cache_hits",
)
_PREEMPTIONS: Final = ("vllm:num_preemptions_total", "vllm:num_preemptions")
_PROMPT_TPS_V0: Final = ("vllm:avg_prompt_throughput_toks_per_s",)
_GENERATION_TPS_V0: Final = ("vllm:avg_generation_throughput_toks_per_s",)
_HIT_RATE_V0: Final = ("vllm:gpu_prefix_cache_hit_rate",)
_CACHE_INFO: Final = "vllm:cache_config_info"

WANTED_SAMPLES: Final = frozenset(
    (
        *_RUNNING,
        *_WAITING,
        *_KV_USAGE,
        *_PROMPT,
        *_GENERATION,
        *_QUERIES,
        *_HITS,
        *_PREEMPTIONS,
        *_PROMPT_TPS_V0,
        *_GENERATION_TPS_V0,
        *_HIT_RATE_V0,
        _CACHE_INFO,
    )
)
"""Every sample name :func:`snapshot_from` may read (pass it to the parser)."""

Families = Mapping[str, Sequence[Sample]]


class NotEngineMetrics(ValueError):
    """The page has neither running nor waiting request gauges: not a vLLM-like engine."""


@dataclass(frozen=True)
class CacheConfig:
    """What `vllm:cache_config_info` says about the KV cache (None = label absent)."""

    block_size: int | None
    num_gpu_blocks: int | None
    hash_algo: str | None
    prefix_caching: bool | None


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape, reduced to what the load and the registry need (counters raw)."""

    running: int
    waiting: int
    kv_usage: float
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    prefix_queries: float | None = None
    prefix_hits: float | None = None
    preemptions: float | None = None
    prompt_tps_v0: float | None = None
    generation_tps_v0: float | None = None
    prefix_hit_rate_v0: float | None = None
    cache: CacheConfig | None = None


def snapshot_from(families: Families) -> MetricsSnapshot:
    """Reduce parsed families to a snapshot.

    Raises:
        NotEngineMetrics: neither `vllm:num_requests_running` nor `..._waiting` is present.
    """
    running = _sum(families, _RUNNING)
    waiting = _sum(families, _WAITING)
    if running is None and waiting is None:
        raise NotEngineMetrics("no vllm:num_requests_running / vllm:num_requests_waiting samples")
    return MetricsSnapshot(
        running=round(running or 0.0),
        waiting=round(waiting or 0.0),
        kv_usage=_clamp01(_mean(families, _KV_USAGE) or 0.0),
        prompt_tokens=_sum(families, _PROMPT),
        generation_tokens=_sum(families, _GENERATION),
        prefix_queries=_sum(families, _QUERIES),
        prefix_hits=_sum(families, _HITS),
        preemptions=_sum(families, _PREEMPTIONS),
        prompt_tps_v0=_sum(families, _PROMPT_TPS_V0),
        generation_tps_v0=_sum(families, _GENERATION_TPS_V0),
        prefix_hit_rate_v0=_mean(families, _HIT_RATE_V0),
        cache=_cache_config(families.get(_CACHE_INFO)),
    )


_NOTHING: Final = MetricsSnapshot(running=0, waiting=0, kv_usage=0.0)
"""The 'previous scrape' of the first one: no counters, so no rates."""


class LoadTracker:
    """Turns one engine's successive scrapes into EngineLoad messages.

    Owned by that engine's scrape loop; call :meth:`observe` after each successful
    scrape and :meth:`failed` after each failed one, once per scrape interval.

    Args:
        engine_id: the engine the loads describe.
    """

    def __init__(self, engine_id: str) -> None:
        self.engine_id = engine_id
        self._seq = 0
        self._prev: tuple[float, MetricsSnapshot] | None = None

    def observe(self, snap: MetricsSnapshot, *, ts: float, mono: float) -> EngineLoad:
        """The load of a successful scrape taken at wall time `ts`, monotonic time `mono`."""
        prev_mono, prev = self._prev if self._prev else (mono, _NOTHING)
        elapsed = mono - prev_mono
        self._prev = (mono, snap)
        return self._load(
            ts=ts,
            running=snap.running,
            waiting=snap.waiting,
            kv_usage=snap.kv_usage,
            prompt_tps=_rate(snap.prompt_tokens, prev.prompt_tokens, elapsed, snap.prompt_tps_v0),
            generation_tps=_rate(snap.generation_tokens, prev.generation_tokens, elapsed, snap.generation_tps_v0),
            prefix_hit_rate=_hit_rate(snap, prev),
            preemptions=round(_delta(snap.preemptions, prev.preemptions) or 0.0),
            healthy=True,
        )

    def failed(self, *, ts: float) -> EngineLoad:
        """The load after a failed scrape: unhealthy, last known gauges, zero rates."""
        last = self._prev[1] if self._prev else None
        return self._load(
            ts=ts,
            running=last.running if last else 0,
            waiting=last.waiting if last else 0,
            kv_usage=last.kv_usage if last else 0.0,
            prompt_tps=0.0,
            generation_tps=0.0,
            prefix_hit_rate=None,
            preemptions=0,
            healthy=False,
        )

    def _load(self, **fields: object) -> EngineLoad:
        load = EngineLoad.model_validate({"engine_id": self.engine_id, "seq": self._seq, **fields})
        self._seq += 1
        return load


def _values(families: Families, names: Sequence[str]) -> list[float] | None:
    for name in names:
        samples = families.get(name)
        if samples:
            return [sample.value for sample in samples if sample.value == sample.value]  # drop NaN
    return None


def _sum(families: Families, names: Sequence[str]) -> float | None:
    values = _values(families, names)
    return sum(values) if values else None


def _mean(families: Families, names: Sequence[str]) -> float | None:
    values = _values(families, names)
    return sum(values) / len(values) if values else None


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))


def _delta(now: float | None, prev: float | None) -> float | None:
    if now is None or prev is None:
        return None
    return now - prev if now >= prev else now  # a decrease is a counter reset


def _rate(now: float | None, prev: float | None, elapsed: float, fallback: float | None) -> float:
    delta = _delta(now, prev)
    if delta is not None:
        return delta / elapsed if elapsed > 0 else 0.0
    if now is None and fallback is not None:
        return max(0.0, fallback)
    return 0.0


def _hit_rate(snap: MetricsSnapshot, prev: MetricsSnapshot) -> float | None:
    queries = _delta(snap.prefix_queries, prev.prefix_queries)
    hits = _delta(snap.prefix_hits, prev.prefix_hits)
    if queries is not None and hits is not None:
        return _clamp01(hits / queries) if queries > 0 else None
    if snap.prefix_queries is None and snap.prefix_hit_rate_v0 is not None:
        return _clamp01(snap.prefix_hit_rate_v0)
    return None


def _cache_config(samples: Sequence[Sample] | None) -> CacheConfig | None:
    if not samples:
        return None
    labels = samples[0].labels
    prefix = labels.get("enable_prefix_caching")
    return CacheConfig(
        block_size=_int(labels.get("block_size")),
        num_gpu_blocks=_int(labels.get("num_gpu_blocks")),
        hash_algo=labels.get("prefix_caching_hash_algo") or None,
        prefix_caching=None if prefix is None else prefix.strip().lower() in ("true", "1"),
    )


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(float(text))
    except ValueError:
        return None
    return value if value > 0 else None
