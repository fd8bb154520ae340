"""Types crossing the boundary between the simulated engine core and its surfaces.

The HTTP layer turns an OpenAI request into a :class:`GenerateRequest` (token ids in),
submits it to the :class:`EngineCore`, and turns the stream of :class:`TokenOutput`
into SSE chunks or one JSON response. Everything here is plain data; no I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from strata_contracts.vllm_kv_events import VllmKvEvent

__all__ = [
    "EngineCore",
    "EngineStats",
    "FinishReason",
    "GenerateRequest",
    "KvEventSink",
    "RequestMetrics",
    "RequestRejected",
    "TokenOutput",
]


class FinishReason(StrEnum):
    """Why a request stopped (vLLM's `finish_reason`)."""

    STOP = "stop"  # EOS sampled (only without ignore_eos, after min_tokens)
    LENGTH = "length"  # max_tokens reached
    ABORT = "abort"  # client went away or the engine shut down


class RequestRejected(ValueError):
    """The request cannot be served as asked (e.g. prompt + max_tokens > max_model_len).

    The message follows vLLM's wording; the HTTP layer maps it to a 400 error.
    """


@dataclass(frozen=True)
class GenerateRequest:
    """One generation request, already tokenized.

    Attributes:
        request_id: unique id (vLLM style: `cmpl-…` / `chatcmpl-…`).
        prompt_token_ids: the prompt after the chat template and special tokens.
        max_tokens: completion budget (>= 1).
        min_tokens: EOS is not sampled before this many tokens.
        ignore_eos: generate exactly max_tokens.
        seed: sampling seed for the simulated output tokens (None = derived from the id).
        cache_salt: namespaces prefix caching like vLLM's `cache_salt`.
        priority: lower runs earlier (only with a priority scheduling policy).
        arrival_time: engine clock time the request arrived (seconds).
    """

    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    seed: int | None = None
    cache_salt: str | None = None
    priority: int = 0
    arrival_time: float = 0.0


@dataclass(frozen=True)
class TokenOutput:
    """Tokens produced for one request by one engine step.

    Attributes:
        token_ids: new tokens (usually one; may be empty on the final abort output).
        finish_reason: set on the request's last output, else None.
        num_cached_tokens: prompt tokens served from the prefix cache (or the offload
            tier) at first schedule; the same value on every output of a request.
        prompt_tokens: length of the prompt.
        now: engine clock time (s) of the step that produced the tokens.
        metrics: set on the last output only: the request's timings for histograms.
    """

    token_ids: list[int]
    finish_reason: FinishReason | None
    num_cached_tokens: int
    prompt_tokens: int
    now: float
    metrics: RequestMetrics | None = None


@dataclass(frozen=True)
class RequestMetrics:
    """Per-request timings in engine seconds, as vLLM's request-level histograms see them."""

    queue_s: float  # arrival -> first scheduled   (vllm:request_queue_time_seconds)
    ttft_s: float  # arrival -> first token        (vllm:time_to_first_token_seconds)
    prefill_s: float  # first scheduled -> first token (vllm:request_prefill_time_seconds)
    decode_s: float  # first token -> last token     (vllm:request_decode_time_seconds)
    e2e_s: float  # arrival -> finish              (vllm:e2e_request_latency_seconds)
    inference_s: float  # first scheduled -> finish (vllm:request_inference_time_seconds)
    prompt_tokens: int
    generation_tokens: int
    num_preemptions: int
    max_tokens: int


class KvEventSink(Protocol):
    """Receives each engine step's KV events (the ZMQ publisher, or a list in tests)."""

    def publish_batch(self, ts: float, events: Sequence[VllmKvEvent]) -> None:
        """Called once per engine step that produced events, in step order. Must not block."""


@dataclass
class EngineStats:
    """Counters and gauges the /metrics endpoint exposes (vLLM names in comments).

    Request histograms are fed by the HTTP layer from :class:`RequestMetrics`; the
    per-token ones (inter-token latency) from the spacing of TokenOutput.now values.
    """

    num_running: int = 0  # vllm:num_requests_running
    num_waiting: int = 0  # vllm:num_requests_waiting
    kv_cache_usage: float = 0.0  # vllm:kv_cache_usage_perc
    prefix_cache_queries: int = 0  # vllm:prefix_cache_queries_total (tokens)
    prefix_cache_hits: int = 0  # vllm:prefix_cache_hits_total (tokens)
    prompt_tokens: int = 0  # vllm:prompt_tokens_total
    generation_tokens: int = 0  # vllm:generation_tokens_total
    num_preemptions: int = 0  # vllm:num_preemptions_total
    external_queries: int = 0  # vllm:external_prefix_cache_queries_total (tokens asked of an offload tier)
    external_hits: int = 0  # vllm:external_prefix_cache_hits_total (tokens loaded from an offload tier)
    request_success: dict[str, int] = field(default_factory=dict)  # vllm:request_success_total{finished_reason}


class EngineCore(Protocol):
    """What the HTTP layer needs from a (simulated) engine."""

    model_name: str
    max_model_len: int
    block_size: int
    num_blocks: int
    stats: EngineStats

    def generate(self, request: GenerateRequest) -> AsyncIterator[TokenOutput]:
        """Submit `request` and iterate its outputs until one carries a finish reason.

        Raises:
            RequestRejected: before any output, if the request cannot be served.
        Closing the iterator early (client disconnect) aborts the request and frees
        its KV blocks.
        """
        ...
