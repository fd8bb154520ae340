"""Per-request metrics computed from one :class:`RequestRecord` (all in seconds).

Definitions (neutral ones of the benchmarks reference, vLLM's where they differ):

* TTFT = first token-bearing chunk − send; E2E = end of response − send.
* "from scheduled" variants start at the planned send time instead (no coordinated
  omission): they include the client's lateness ``send_lag = sent − scheduled``.
* TPOT (vLLM) = (last token − first token) / (output tokens − 1), i.e. vLLM's
  (E2EL − TTFT)/(out − 1) where vLLM's E2EL ends at the last token; None when fewer than
  2 tokens or the response was not streamed.
* ITL (true, per token): between consecutive token-bearing chunks ``i-1`` and ``i``, a
  chunk carrying ``k`` tokens contributes ``k`` gaps of ``(t_i − t_{i-1}) / k``::

      t0 [1 tok] ─── 6 ms ───▶ t1 [3 tok]  ⇒  ITL samples 2, 2, 2 ms

  Tokens arriving in the first chunk besides the first token add no gap (they are part of
  TTFT), so there are ``out − tokens(first chunk)`` samples.
"""

from __future__ import annotations

from strata_bench.model import RequestRecord

__all__ = ["e2e", "is_ok", "is_streamed", "itl_gaps", "output_tokens", "send_lag", "tpot", "ttft"]


def is_ok(rec: RequestRecord) -> bool:
    """Completed without error and produced at least one token."""
    return rec.error_type is None and rec.first_token_s is not None and rec.end_s is not None


def is_streamed(rec: RequestRecord) -> bool:
    """False for non-streamed responses (one arrival time: no TPOT/ITL)."""
    return bool(rec.extra.get("stream", True))


def output_tokens(rec: RequestRecord) -> int:
    """Completion tokens: server usage when reported, else the tokens counted per chunk."""
    return rec.completion_tokens if rec.completion_tokens is not None else sum(rec.chunk_tokens)


def send_lag(rec: RequestRecord) -> float:
    """How late the request was sent against its schedule (>= 0 up to clock noise)."""
    return rec.sent_s - rec.scheduled_s


def ttft(rec: RequestRecord, *, from_scheduled: bool = False) -> float | None:
    """Time to first token from the send (or the scheduled send); None without a token."""
    if rec.first_token_s is None:
        return None
    return rec.first_token_s - (rec.scheduled_s if from_scheduled else rec.sent_s)


def e2e(rec: RequestRecord, *, from_scheduled: bool = False) -> float | None:
    """End-to-end latency from the send (or the scheduled send); None when it never ended."""
    if rec.end_s is None:
        return None
    return rec.end_s - (rec.scheduled_s if from_scheduled else rec.sent_s)


def tpot(rec: RequestRecord) -> float | None:
    """Time per output token after the first (vLLM sense); None if undefined."""
    n = output_tokens(rec)
    if n < 2 or not rec.token_times_s or not is_streamed(rec):
        return None
    return (rec.token_times_s[-1] - rec.token_times_s[0]) / (n - 1)


def itl_gaps(rec: RequestRecord) -> list[float]:
    """Per-token inter-token latencies (see the module docstring for multi-token chunks)."""
    times, counts = rec.token_times_s, rec.chunk_tokens
    if not is_streamed(rec) or len(times) < 2:
        return []
    gaps: list[float] = []
    for i in range(1, len(times)):
        k = counts[i] if i < len(counts) else 1
        if k > 0:
            gaps.extend([(times[i] - times[i - 1]) / k] * k)
    return gaps
