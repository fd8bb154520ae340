"""Settings of the load client: where and how to send (endpoint) and how to pace (load)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = ["DEFAULT_ENGINE_HEADERS", "EndpointConfig", "LoadConfig"]

DEFAULT_ENGINE_HEADERS: Final = ("x-strata-engine", "x-served-by", "x-worker")
"""Response headers naming the engine that served a request, first present wins."""


@dataclass(frozen=True)
class EndpointConfig:
    """An OpenAI-compatible endpoint and the request options sent to it.

    Attributes:
        base_url: server root, e.g. ``http://127.0.0.1:8000`` (``/v1/...`` is appended).
        model: model name; None asks ``GET /v1/models`` once at start and takes the first.
        api: ``chat`` (/v1/chat/completions) or ``completions`` (/v1/completions).
        stream: use SSE streaming (per-token times); False records one time per response.
        include_usage: send ``stream_options.include_usage`` (exact totals in the last chunk).
        continuous_usage: also send ``continuous_usage_stats`` (vLLM: usage in every chunk,
            so the tokens each chunk carries are exact, not assumed to be one).
        ignore_eos: send ``ignore_eos`` so the output is exactly ``max_tokens`` long.
        routing_strategy: value of the ``routing-strategy`` header (AIBrix / Strata gateway).
        headers: extra headers on every request (a request's own headers win).
        engine_headers: response headers naming the serving engine, first present wins.
        timeout_s: per-request limit (send → end of response); None for none.
        extra_body: merged into every request body (e.g. ``{"temperature": 0}``).
        api_key: sent as ``Authorization: Bearer``.
    """

    base_url: str
    model: str | None = None
    api: Literal["chat", "completions"] = "chat"
    stream: bool = True
    include_usage: bool = True
    continuous_usage: bool = True
    ignore_eos: bool = True
    routing_strategy: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    engine_headers: tuple[str, ...] = DEFAULT_ENGINE_HEADERS
    timeout_s: float | None = 600.0
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    api_key: str | None = None

    def __post_init__(self) -> None:
        if self.api not in ("chat", "completions"):
            raise ValueError(f"EndpointConfig.api must be 'chat' or 'completions', not {self.api!r}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("EndpointConfig.timeout_s must be > 0 or None")

    @property
    def url(self) -> str:
        """Full URL of the generation endpoint."""
        path = "/v1/chat/completions" if self.api == "chat" else "/v1/completions"
        return self.base_url.rstrip("/") + path


@dataclass(frozen=True)
class LoadConfig:
    """How a plan is paced and when the run stops.

    Attributes:
        mode: ``open`` sends each request at ``t0 + at_s`` (absolute times, no drift; late
            requests go at once and keep their scheduled time); ``closed`` runs
            `concurrency` workers that each send the next request when their last one ended.
        concurrency: closed-loop workers (a worker owns a whole session while it runs).
        max_concurrent_sessions: open-loop cap on sessions in flight (a request without a
            session counts as one); waiting for a slot is send lag, not hidden.
        max_requests: stop sending after this many requests (warm-up excluded).
        duration_s: stop sending new requests after this long; in-flight ones finish.
        deadline_s: hard stop: in-flight requests are cancelled and recorded as cancelled.
        spin_s: the last stretch before a scheduled send is waited by yielding to the
            loop instead of a timer (timers wake ≈ 1 ms late); 0 disables.
        warmup_concurrency: parallelism of the warm-up requests.
    """

    mode: Literal["open", "closed"] = "open"
    concurrency: int = 1
    max_concurrent_sessions: int | None = None
    max_requests: int | None = None
    duration_s: float | None = None
    deadline_s: float | None = None
    spin_s: float = 0.001
    warmup_concurrency: int = 4

    def __post_init__(self) -> None:
        if self.mode not in ("open", "closed"):
            raise ValueError(f"LoadConfig.mode must be 'open' or 'closed', not {self.mode!r}")
        if self.concurrency < 1 or self.warmup_concurrency < 1:
            raise ValueError("LoadConfig.concurrency and warmup_concurrency must be >= 1")
        if self.max_concurrent_sessions is not None and self.max_concurrent_sessions < 1:
            raise ValueError("LoadConfig.max_concurrent_sessions must be >= 1 or None")
