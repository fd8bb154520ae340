"""Settings of the gateway (`STRATA_GATEWAY_*`, or the matching `--flags`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator

from strata_runtime.plane import REGISTRY_TTL_S
from strata_runtime.settings import ServiceSettings, service_config

__all__ = ["DEFAULT_STRATEGIES", "FLAGS", "GatewaySettings"]

DEFAULT_STRATEGIES: tuple[str, ...] = (
    "random",
    "least-request",
    "throughput",
    "least-kv-cache",
    "least-busy-time",
    "least-latency",
    "power-of-two",
    "prefix-cache",
    "prefix-cache-preble",
    "vtc-basic",
    "session-affinity",
)
"""Strategy names the gateway accepts by default (AIBrix v0.3.0 + HEAD names, routing.md §2)."""


class GatewaySettings(ServiceSettings):
    """The OpenAI-compatible gateway: routing, upstream timeouts, failover and auth."""

    model_config = service_config("gateway")
    shared_fields: ClassVar[tuple[str, ...]] = ("nats_url", "database_url")

    strategies: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STRATEGIES),
        description="Accepted strategy names (JSON list); any other routing-strategy header is a 400.",
    )
    default_strategy: str = Field(
        default="least-request",
        validate_default=True,
        description="Strategy when neither the routing-strategy header nor the key names one.",
    )
    router_enabled: bool = Field(default=True, description="Ask the router (NATS strata.route.v1.pick) for engines.")
    route_timeout_ms: int = Field(
        default=20, gt=0, le=10_000, description="Time the router gets to answer before a local fallback pick."
    )
    connect_timeout_s: float = Field(default=2.0, gt=0, description="Upstream connect timeout (retried elsewhere).")
    request_timeout_s: float = Field(
        default=600.0, gt=0, description="Deadline of one request end to end, streams included (then 504)."
    )
    idle_timeout_s: float = Field(
        default=120.0, gt=0, description="Longest upstream silence (first byte or between chunks) before a 504."
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="Largest request body accepted (else 413).")
    max_retries: int = Field(
        default=1, ge=0, le=5, description="Other engines tried after a connect error or 5xx before the first byte."
    )
    retry_budget_percent: float = Field(
        default=20.0, ge=0, le=100, description="Retries in flight may not exceed this share of requests in flight."
    )
    retry_min_concurrency: int = Field(
        default=3, ge=0, description="Retries in flight always allowed, whatever the budget percentage."
    )
    eject_s: float = Field(
        default=5.0, ge=0, description="After a connect failure an engine gets no local picks for this long."
    )
    registry_stale_s: float = Field(
        default=REGISTRY_TTL_S, gt=0, description="A registration whose heartbeat is older than this is not routed to."
    )
    load_stale_s: float = Field(
        default=2.0, gt=0, description="Load snapshots older than this are ignored (health and tie-breaks)."
    )
    upstream_max_connections: int = Field(
        default=0, ge=0, description="Connections to each engine (0 = unlimited; keep-alive pool per host:port)."
    )
    auth_enabled: bool = Field(
        default=True, description="Require API keys (PostgreSQL) and enforce limits; false = one open tenant 'default'."
    )
    database_url: str = Field(
        default="",
        validate_default=True,
        description="PostgreSQL URL for keys and tenants, required when auth_enabled "
        "(also read from STRATA_DATABASE_URL).",
    )

    database_pool_size: int = Field(default=4, ge=1, le=64, description="PostgreSQL connections (API-key lookups).")
    auth_cache_ttl_s: float = Field(
        default=5.0, gt=0, description="How long a looked-up API key is trusted (bounds the revocation delay)."
    )
    usage_spool_dir: str = Field(
        default="",
        description="Usage records wait here while NATS is unreachable; must survive restarts, one per replica "
        "('' = .strata/gateway-spool/<instance id or host name>).",
    )

    @field_validator("default_strategy")
    @classmethod
    def _known_default(cls, value: str, info: ValidationInfo) -> str:
        strategies = info.data.get("strategies")
        if strategies is not None and value not in strategies:
            raise ValueError(f"not one of the accepted strategies {strategies}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_when_auth(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("auth_enabled", True) and not value:
            raise ValueError("required when auth_enabled (set STRATA_DATABASE_URL, or auth_enabled=false)")
        return value


FLAGS = ("host", "port", "default_strategy", "auth_enabled")
