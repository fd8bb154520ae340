"""Settings of the usage ledger writer: environment variables `STRATA_LEDGER_*`.

`STRATA_LEDGER_DATABASE_URL` and `STRATA_LEDGER_NATS_URL` fall back to the cluster-wide
`STRATA_DATABASE_URL` / `STRATA_NATS_URL`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from strata_runtime import ServiceSettings, service_config

__all__ = ["LedgerSettings"]


class LedgerSettings(ServiceSettings):
    """Settings of `python -m strata_gateway.ledger`."""

    model_config = service_config("ledger")
    shared_fields: ClassVar[tuple[str, ...]] = ("nats_url", "database_url")

    database_url: str = Field(
        min_length=1, description="PostgreSQL URL of the usage ledger (also read from STRATA_DATABASE_URL)."
    )
    durable: str = Field(
        default="strata-ledger",
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="Durable JetStream consumer name; replicas sharing it split the stream between them.",
    )
    batch_size: int = Field(default=256, ge=1, le=10_000, description="Records fetched and inserted per batch.")
    fetch_timeout_s: float = Field(default=1.0, gt=0, le=30, description="Longest wait for a batch to fill.")
    ack_wait_s: float = Field(
        default=30.0, gt=0, description="Redelivery delay of a fetched record that was not acknowledged."
    )
    pool_size: int = Field(default=4, ge=1, le=64, description="PostgreSQL connections.")
    startup_timeout_s: float = Field(
        default=30.0, gt=0, description="How long start-up retries an unreachable PostgreSQL before failing."
    )
    retry_max_s: float = Field(default=5.0, gt=0, description="Longest back-off after a NATS or PostgreSQL failure.")
