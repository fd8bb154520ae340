"""The usage ledger record."""

from __future__ import annotations

from pydantic import Field

from strata_contracts.messages.base import Contract

__all__ = ["UsageRecord"]


class UsageRecord(Contract):
    """`strata.usage.v1.<tenant>`: exactly one per gateway request (dedup id = request_id)."""

    request_id: str = Field(
        description="Gateway request id, unique per request (made by the gateway); JetStream dedup id and ledger key."
    )
    tenant_id: str = Field(description="Tenant billed.")
    api_key_id: str | None = Field(default=None, description="Id (not the secret) of the key used.")
    model: str = Field(description="Model requested.")
    engine_id: str | None = Field(default=None, description="Engine that served it; None if none did.")
    strategy: str | None = Field(default=None, description="Routing strategy used.")
    endpoint: str = Field(description="API path, e.g. /v1/chat/completions.")
    stream: bool = Field(description="Whether the client streamed.")
    status: int = Field(description="HTTP status returned to the client.")
    prompt_tokens: int = Field(ge=0, description="Prompt tokens.")
    completion_tokens: int = Field(ge=0, description="Completion tokens.")
    cached_tokens: int | None = Field(default=None, ge=0, description="Cached prompt tokens, when reported.")
    ttft_ms: float | None = Field(default=None, ge=0, description="Time to first token (ms).")
    latency_ms: float = Field(ge=0, description="End-to-end latency (ms).")
    started_at: float = Field(description="Unix time (s) the gateway received the request.")
    error: str | None = Field(default=None, description="Error type, when the request failed.")
    client_request_id: str | None = Field(
        default=None, description="The client's x-request-id, when it sent one (clients may reuse them)."
    )
