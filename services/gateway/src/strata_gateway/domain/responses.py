"""Response bodies the gateway writes itself: the model list and the error envelope.

Generation responses are the engine's own bytes and have no model here. These models
are also the response schemas of the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field

from strata_gateway.domain.fleet import ModelEntry

__all__ = ["ErrorBody", "ErrorResponse", "ModelCard", "ModelList", "model_list"]


class ErrorBody(BaseModel):
    """The `error` object (vLLM's engine errors put the integer status in `code`)."""

    message: str = Field(description="Human-readable message.")
    type: str = Field(description="Error class, e.g. invalid_request_error, rate_limit_error.")
    param: str | None = Field(description="The offending parameter, if any.")
    code: str | int | None = Field(description="Machine code (e.g. model_not_found) or an engine's status.")


class ErrorResponse(BaseModel):
    """Every error response of the gateway."""

    error: ErrorBody


class ModelCard(BaseModel):
    """One served model (OpenAI model object, plus the fleet view)."""

    id: str = Field(description="Model name to put in `model`.")
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the oldest live engine of the model registered.")
    owned_by: str = Field(default="strata", description="Always strata.")
    max_model_len: int = Field(description="Shortest context length among the model's engines.")
    engines: int = Field(description="Engines currently serving the model.")


class ModelList(BaseModel):
    """GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


def model_list(entries: Iterable[ModelEntry]) -> ModelList:
    """The /v1/models body for `entries`."""
    return ModelList(
        data=[
            ModelCard(id=e.model, created=e.created, max_model_len=e.max_model_len, engines=e.engines) for e in entries
        ]
    )
