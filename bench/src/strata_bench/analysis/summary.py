"""Aggregate a run's records into one :class:`Summary` (JSON-ready; latencies in ms).

* Duration = first scheduled send → last end; throughputs count successful requests.
* Latencies are reported both from the actual send and from the scheduled send
  (``ttft_sched``, ``e2e_sched``) with the send lag next to them; ``client_behind`` flags a
  run whose p99 send lag exceeds a threshold (the client, not the server, was the limit).
* Goodput = successful requests meeting every SLO set, per second of duration (vLLM's
  definition; TPOT of a < 2-token answer counts as 0), from send and from schedule.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from strata_bench.analysis import metrics as m
from strata_bench.analysis.stats import Distribution, describe
from strata_bench.model import RequestRecord

__all__ = ["SLO", "EngineStats", "Summary", "summarize"]

_MS = 1000.0


@dataclass(frozen=True)
class SLO:
    """Latency objectives in seconds; a request is *good* when it succeeded and meets all set."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    @classmethod
    def parse(cls, spec: str) -> SLO:
        """Parse ``"ttft:200 tpot:50 e2e:2000"`` (milliseconds; comma or space separated).

        Raises:
            ValueError: unknown metric or malformed item (named in the message).
        """
        values: dict[str, float] = {}
        for item in spec.replace(",", " ").split():
            name, _, ms = item.partition(":")
            if name not in ("ttft", "tpot", "e2e") or not ms:
                raise ValueError(f"bad SLO item {item!r}: expected ttft|tpot|e2e:<ms>")
            values[f"{name}_s"] = float(ms) / _MS
        return cls(**values)

    def is_set(self) -> bool:
        """At least one objective is set."""
        return any(v is not None for v in (self.ttft_s, self.tpot_s, self.e2e_s))

    def met(self, rec: RequestRecord, *, from_scheduled: bool = False) -> bool:
        """`rec` succeeded and meets every objective (TTFT/E2E from send or schedule)."""
        if not m.is_ok(rec):
            return False
        checks = (
            (self.ttft_s, m.ttft(rec, from_scheduled=from_scheduled)),
            (self.tpot_s, m.tpot(rec) or 0.0),
            (self.e2e_s, m.e2e(rec, from_scheduled=from_scheduled)),
        )
        return all(limit is None or (value is not None and value <= limit) for limit, value in checks)

    def to_ms(self) -> dict[str, float]:
        """The objectives that are set, in ms, keyed ``ttft``/``tpot``/``e2e``."""
        pairs = (("ttft", self.ttft_s), ("tpot", self.tpot_s), ("e2e", self.e2e_s))
        return {k: v * _MS for k, v in pairs if v is not None}


@dataclass(frozen=True)
class EngineStats:
    """Requests one engine served and its prefix-cache hit ratio (cached / prompt tokens)."""

    requests: int
    share: float
    ok: int
    prompt_tokens: int
    cached_tokens: int
    prefix_hit_ratio: float | None


@dataclass(frozen=True)
class Summary:
    """Everything the reports print about one run. ``latency_ms`` keys: ``ttft``, ``tpot``,
    ``itl``, ``e2e``, ``ttft_sched``, ``e2e_sched``, ``send_lag`` (absent when no sample)."""

    requests: int
    ok: int
    failed: int
    cancelled: int
    duration_s: float
    offered_rps: float | None
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    input_tokens: int
    output_tokens: int
    latency_ms: dict[str, Distribution]
    errors: dict[str, int]
    engines: dict[str, EngineStats]
    prefix_hit_ratio: float | None
    client_behind: bool
    slo_ms: dict[str, float] = field(default_factory=dict)
    goodput: float | None = None
    goodput_scheduled: float | None = None
    slo_attainment: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (inverse: :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        """Rebuild a summary read back from JSON; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["latency_ms"] = {k: Distribution.from_dict(v) for k, v in data["latency_ms"].items()}
        values["engines"] = {k: EngineStats(**v) for k, v in data["engines"].items()}
        return cls(**values)


def summarize(records: Sequence[RequestRecord], slo: SLO | None = None, *, behind_p99_s: float = 0.010) -> Summary:
    """Aggregate `records` (one run). `behind_p99_s`: p99 send lag above which the client
    is declared behind its schedule."""
    ok = [r for r in records if m.is_ok(r)]
    start = min((r.scheduled_s for r in records), default=0.0)
    end = max((r.end_s if r.end_s is not None else r.sent_s for r in records), default=0.0)
    duration = max(end - start, 0.0)

    def per_s(x: float) -> float:
        return x / duration if duration > 0 else 0.0

    sched = sorted(r.scheduled_s for r in records)
    offered = (len(sched) - 1) / (sched[-1] - sched[0]) if len(sched) > 1 and sched[-1] > sched[0] else None
    tokens_in = sum(r.prompt_tokens or 0 for r in ok)
    tokens_out = sum(m.output_tokens(r) for r in ok)
    latency = _latencies(records, ok)
    lag = latency.get("send_lag")
    goodput = goodput_sched = attainment = None
    if slo is not None and slo.is_set():
        good = sum(slo.met(r) for r in ok)
        goodput, attainment = per_s(good), (good / len(records) if records else None)
        goodput_sched = per_s(sum(slo.met(r, from_scheduled=True) for r in ok))
    return Summary(
        requests=len(records),
        ok=len(ok),
        failed=sum(not m.is_ok(r) and r.error_type != "cancelled" for r in records),
        cancelled=sum(r.error_type == "cancelled" for r in records),
        duration_s=duration,
        offered_rps=offered,
        request_throughput=per_s(len(ok)),
        output_throughput=per_s(tokens_out),
        total_token_throughput=per_s(tokens_in + tokens_out),
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        latency_ms=latency,
        errors=_errors(records),
        engines=_engines(records),
        prefix_hit_ratio=_hit_ratio(ok),
        client_behind=lag is not None and lag.p99 > behind_p99_s * _MS,
        slo_ms=slo.to_ms() if slo is not None else {},
        goodput=goodput,
        goodput_scheduled=goodput_sched,
        slo_attainment=attainment,
    )


def _latencies(records: Sequence[RequestRecord], ok: Sequence[RequestRecord]) -> dict[str, Distribution]:
    series: dict[str, list[float]] = {
        "ttft": [v for r in ok if (v := m.ttft(r)) is not None],
        "tpot": [v for r in ok if (v := m.tpot(r)) is not None],
        "itl": [g for r in ok for g in m.itl_gaps(r)],
        "e2e": [v for r in ok if (v := m.e2e(r)) is not None],
        "ttft_sched": [v for r in ok if (v := m.ttft(r, from_scheduled=True)) is not None],
        "e2e_sched": [v for r in ok if (v := m.e2e(r, from_scheduled=True)) is not None],
        "send_lag": [m.send_lag(r) for r in records],
    }
    return {k: d for k, v in series.items() if (d := describe(v, _MS)) is not None}


def _errors(records: Sequence[RequestRecord]) -> dict[str, int]:
    kinds = Counter(
        f"http {r.status}" if r.error_type == "http" else (r.error_type or "no tokens")
        for r in records
        if not m.is_ok(r)
    )
    return dict(sorted(kinds.items()))


def _hit_ratio(records: Sequence[RequestRecord]) -> float | None:
    reported = [r for r in records if r.cached_tokens is not None and r.prompt_tokens]
    prompt = sum(r.prompt_tokens or 0 for r in reported)
    return math.fsum(r.cached_tokens or 0 for r in reported) / prompt if prompt else None


def _engines(records: Sequence[RequestRecord]) -> dict[str, EngineStats]:
    if not any(r.engine for r in records):
        return {}
    groups: dict[str, list[RequestRecord]] = {}
    for r in records:
        groups.setdefault(r.engine or "(none)", []).append(r)
    out = {}
    for name, group in sorted(groups.items()):
        ok = [r for r in group if m.is_ok(r)]
        reported = [r for r in ok if r.cached_tokens is not None]
        out[name] = EngineStats(
            requests=len(group),
            share=len(group) / len(records),
            ok=len(ok),
            prompt_tokens=sum(r.prompt_tokens or 0 for r in reported),
            cached_tokens=sum(r.cached_tokens or 0 for r in reported),
            prefix_hit_ratio=_hit_ratio(ok),
        )
    return out
