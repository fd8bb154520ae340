"""The state of one gateway request, and the records it leaves behind.

An :class:`Exchange` is created when a generation request arrives, filled in as it
goes (principal, parsed body, route, status, usage, first byte), and turned into
exactly one UsageRecord (when it was admitted) and one RouteOutcome (when an engine
was chosen) once it is over. Owned by the request's handler task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from strata_gateway.domain.errors import CLIENT_CLOSED
from strata_gateway.domain.ports import GatewayError, Principal, UsageEntry
from strata_gateway.domain.requests import ParsedRequest
from strata_gateway.domain.sse import Usage

__all__ = ["Exchange"]


@dataclass
class Exchange:
    """One request through the gateway.

    Attributes:
        request_id: the gateway's id of the request, unique (usage record key, upstream X-Request-Id).
        client_request_id: the client's x-request-id, when it sent a usable one (echoed back to it).
        endpoint: API path.
        strategy: requested strategy, once resolved.
        principal: the caller, once authenticated.
        request: the parsed body.
        engine_id: engine of the latest attempt.
        route_strategy: strategy that chose that engine.
        decision_id: router decision id of that attempt (None for a local pick).
        status: HTTP status for the client (499 when it went away first).
        error: error code when the request failed (even after a 200 head).
        usage: token counts reported by the engine.
        first_byte_s: seconds from arrival to the first relayed byte.
        retries: attempts after the first.
        trace_headers: the request's W3C trace context for what is sent about it (usage
            record, outcome): the server span's when spans are recorded, else the client's
            headers as they came (empty when it sent none).
    """

    request_id: str
    endpoint: str
    client_request_id: str | None = None
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    strategy: str | None = None
    principal: Principal | None = None
    request: ParsedRequest | None = None
    engine_id: str | None = None
    route_strategy: str | None = None
    decision_id: str | None = None
    status: int = 200
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    first_byte_s: float | None = None
    retries: int = 0
    t_end: float | None = None
    trace_headers: dict[str, str] = field(default_factory=dict)

    def elapsed(self) -> float:
        """Seconds from arrival to the end (or to now, before :meth:`end`)."""
        return (self.t_end if self.t_end is not None else time.perf_counter()) - self.t0

    def end(self) -> None:
        """Freeze the end time (the handler is done; accounting may come later)."""
        if self.t_end is None:
            self.t_end = time.perf_counter()

    def mark_first_byte(self) -> None:
        """Note the time of the first byte relayed to the client (once)."""
        if self.first_byte_s is None:
            self.first_byte_s = self.elapsed()

    def fail(self, exc: BaseException) -> None:
        """Record why the request ended: a GatewayError's status, 499 on cancel, else 500."""
        if isinstance(exc, GatewayError):
            self.status, self.error = exc.status, exc.code or exc.type
        elif isinstance(exc, asyncio.CancelledError):
            self.status, self.error = CLIENT_CLOSED, "client_disconnected"
        else:
            self.status, self.error = 500, "internal_error"

    @property
    def echoed_id(self) -> str:
        """The x-request-id the client gets back: its own, else the gateway's."""
        return self.client_request_id or self.request_id

    @property
    def strategy_label(self) -> str:
        """Strategy for metrics: the one that routed, else the requested one, else 'none'."""
        return self.route_strategy or self.strategy or "none"

    def usage_entry(self) -> UsageEntry:
        """The request's usage record in wire form (requires the principal and the parsed body).

        Built straight to JSON in UsageRecord's field order, None fields left out: the bytes
        `encode(UsageRecord(...))` would give, without a model per request.
        """
        assert self.principal is not None
        assert self.request is not None
        fields = {
            "request_id": self.request_id,
            "tenant_id": self.principal.tenant_id,
            "api_key_id": self.principal.key_id,
            "model": self.request.model,
            "engine_id": self.engine_id,
            "strategy": self.route_strategy or self.strategy,
            "endpoint": str(self.endpoint),
            "stream": self.request.stream,
            "status": self.status,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "ttft_ms": self._ttft_ms,
            "latency_ms": self.elapsed() * 1000,
            "started_at": self.started_at,
            "error": self.error,
            "client_request_id": self.client_request_id,
        }
        return UsageEntry(self.request_id, self.principal.tenant_id, _wire(fields), self.trace_headers)

    def outcome_payload(self) -> bytes | None:
        """The RouteOutcome in wire form (as `encode` writes it), or None when no engine was chosen."""
        if self.engine_id is None:
            return None
        fields = {
            "decision_id": self.decision_id,
            "request_id": self.request_id,
            "engine_id": self.engine_id,
            "strategy": self.strategy_label,
            "status": self.status,
            "ttft_ms": self._ttft_ms,
            "latency_ms": self.elapsed() * 1000,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cached_tokens": self.usage.cached_tokens,
        }
        return _wire(fields)

    @property
    def _ttft_ms(self) -> float | None:
        return None if self.first_byte_s is None else self.first_byte_s * 1000


def _wire(fields: Mapping[str, object]) -> bytes:
    """JSON of `fields` without the None ones (what the contracts' `encode` leaves out)."""
    return orjson.dumps({k: v for k, v in fields.items() if v is not None})
