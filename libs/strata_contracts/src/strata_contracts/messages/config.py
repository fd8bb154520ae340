"""Configuration entries written by the controller into the config bucket."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from strata_contracts.messages.base import Contract

__all__ = ["ConfigEntry", "LimitsConfig", "RoutingPolicyConfig", "config_key"]


class RoutingPolicyConfig(Contract):
    """A RoutingPolicy: which strategy applies to a model by default."""

    kind: Literal["routing-policy"] = Field(default="routing-policy", description="Entry tag.")
    name: str = Field(description="Policy name (the CR name).")
    model: str | None = Field(default=None, description="Model it applies to; None = every model.")
    default_strategy: str = Field(description="Strategy used when the request names none.")
    allowed_strategies: list[str] | None = Field(default=None, description="None = every registered one.")


class LimitsConfig(Contract):
    """Per-tenant limits."""

    kind: Literal["limits"] = Field(default="limits", description="Entry tag.")
    name: str = Field(description="Tenant id the limits apply to.")
    rpm: int | None = Field(default=None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(default=None, gt=0, description="Prompt + completion tokens per minute.")
    max_concurrency: int | None = Field(default=None, gt=0, description="Requests in flight at once.")


ConfigEntry = Annotated[RoutingPolicyConfig | LimitsConfig, Field(discriminator="kind")]


def config_key(entry: RoutingPolicyConfig | LimitsConfig) -> str:
    """Key of `entry` in the config bucket: `<kind>.<name>`."""
    return f"{entry.kind}.{entry.name}"
