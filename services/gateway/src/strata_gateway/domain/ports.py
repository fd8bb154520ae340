"""The seams between the gateway's request path and its tenant, limit and usage machinery.

The request path (handlers/) only sees these Protocols; `app.py` wires the PostgreSQL /
NATS implementations (adapters/, ledger/) or the local-dev ones (auth off, no limits).

    request ──authenticate──▶ Principal ──admit──▶ Admission ──route + proxy──▶ engine
                                                      │ settle(tokens) / release()
    finished request ──▶ UsageSink.record(UsageRecord) (exactly once per request)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from strata_contracts.messages import UsageRecord, encode

__all__ = [
    "Admission",
    "Authenticator",
    "GatewayError",
    "Limiter",
    "Limits",
    "Principal",
    "UsageSink",
]


class GatewayError(Exception):
    """A request-level failure with its OpenAI error envelope fields.

    Attributes:
        status: HTTP status (400, 401, 403, 404, 413, 429, 502, 503, 504).
        message: human-readable message.
        type: OpenAI error type (e.g. "invalid_request_error", "authentication_error").
        param: the offending parameter, if any.
        code: machine code (e.g. "model_not_found", "rate_limit_exceeded").
        headers: extra response headers (e.g. retry-after).
    """

    def __init__(
        self,
        status: int,
        message: str,
        type: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


@dataclass(frozen=True)
class Limits:
    """Per key/tenant limits; None = unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling, as resolved from the API key."""

    tenant_id: str
    key_id: str | None
    allowed_models: frozenset[str] | None = None  # None = every model
    default_strategy: str | None = None
    limits: Limits = field(default_factory=Limits)


class Authenticator(Protocol):
    """Resolves the `Authorization: Bearer <key>` header to a Principal."""

    async def authenticate(self, authorization: str | None) -> Principal:
        """Raises GatewayError(401) for a missing/unknown/revoked key."""
        ...


class Admission(Protocol):
    """A granted request slot; settle once the token counts are known, release always."""

    def settle(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Charge the actual tokens (TPM is settled after the response)."""

    def release(self) -> None:
        """Free the concurrency slot (idempotent)."""


class Limiter(Protocol):
    """RPM / TPM / concurrency enforcement, shared across gateway replicas."""

    async def admit(self, principal: Principal) -> Admission:
        """Raises GatewayError(429, headers={"retry-after": ...}) when a limit is hit."""
        ...


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One request's usage record on its way to the ledger, already in wire form.

    Attributes:
        request_id: the record's request id (its JetStream dedup id).
        tenant_id: the tenant (the subject's last token).
        payload: the UsageRecord as JSON, exactly as `strata_contracts.messages.encode` writes it.
        trace: W3C trace-context headers of the request ({} when there are none).
    """

    request_id: str
    tenant_id: str
    payload: bytes
    trace: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, usage: UsageRecord, trace: Mapping[str, str] | None = None) -> UsageEntry:
        """The entry of a UsageRecord model."""
        return cls(usage.request_id, usage.tenant_id, encode(usage), trace or {})


class UsageSink(Protocol):
    """Where the one usage record per request goes (JetStream with an on-disk spool)."""

    async def record_many(self, entries: Sequence[UsageEntry]) -> None:
        """Record each entry; must not raise and must not lose one (spool when NATS is unreachable)."""
        ...
