"""Routing: pick requests from the gateway and outcomes fed back to the router."""

from __future__ import annotations

from pydantic import Field

from strata_contracts.messages.base import Contract, UInt64

__all__ = ["RouteDecision", "RouteOutcome", "RoutePick"]


class RoutePick(Contract):
    """`strata.route.v1.pick` request: the features a policy needs to choose an engine."""

    request_id: str = Field(description="Gateway request id (x-request-id).")
    model: str = Field(description="Requested model.")
    strategy: str | None = Field(default=None, description="routing-strategy header; None = policy default.")
    tenant_id: str | None = Field(default=None, description="Tenant of the API key, for fairness policies.")
    session_id: str | None = Field(default=None, description="Session affinity key, if the client sent one.")
    prompt_text: str | None = Field(default=None, description="Prompt as text (router tokenizes if needed).")
    prompt_token_ids: list[int] | None = Field(default=None, description="Prompt token ids, when known.")
    block_keys: list[UInt64] | None = Field(default=None, description="Strata chained block keys of the prompt.")
    prompt_chars: int = Field(ge=0, description="Prompt length in characters (cheap size estimate).")
    max_tokens: int | None = Field(default=None, ge=0, description="Requested completion budget.")
    exclude: list[str] = Field(default_factory=list, description="Engines not to pick (retries).")
    deadline_ms: int = Field(gt=0, description="Time the gateway waits for the answer.")


class RouteDecision(Contract):
    """`strata.route.v1.pick` reply."""

    decision_id: str = Field(description="Id echoed back in the outcome.")
    engine_id: str | None = Field(default=None, description="Chosen engine; None when no engine fits.")
    url: str | None = Field(default=None, description="Base URL of the chosen engine.")
    strategy: str = Field(description="Strategy that made the choice (after defaults).")
    expected_cached_tokens: int = Field(default=0, ge=0, description="Prefix tokens expected to hit.")
    error: str | None = Field(default=None, description="Why no engine was chosen (unknown strategy, ...).")


class RouteOutcome(Contract):
    """`strata.route.v1.outcome`: how a routed request went."""

    decision_id: str | None = Field(default=None, description="Router decision id; None for a local fallback pick.")
    request_id: str = Field(description="Gateway request id.")
    engine_id: str = Field(description="Engine that served (or failed) the request.")
    strategy: str = Field(description="Strategy used.")
    status: int = Field(description="HTTP status returned to the client.")
    ttft_ms: float | None = Field(default=None, ge=0, description="Time to first token (ms).")
    latency_ms: float = Field(ge=0, description="End-to-end latency (ms).")
    prompt_tokens: int = Field(default=0, ge=0, description="Prompt tokens (engine usage).")
    completion_tokens: int = Field(default=0, ge=0, description="Generated tokens.")
    cached_tokens: int | None = Field(default=None, ge=0, description="prompt_tokens_details.cached_tokens.")
