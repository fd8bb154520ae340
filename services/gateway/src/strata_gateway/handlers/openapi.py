"""The gateway's OpenAPI 3.1 document, built from the request and response models.

Served at `/openapi.json` and checked in at `services/gateway/openapi.json` (a test
asserts they are equal). Regenerate the file after changing a schema with::

    python -m strata_gateway.handlers.openapi > services/gateway/openapi.json
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from strata_gateway.domain.requests import ChatCompletionRequest, CompletionRequest
from strata_gateway.domain.responses import ErrorResponse, ModelList

__all__ = ["openapi_document", "openapi_json"]

_REF = "#/components/schemas/{model}"
_GENERATION_ERRORS = {
    "400": "Invalid JSON, schema violation, unknown routing strategy, or an engine's own 400.",
    "401": "Missing or invalid API key.",
    "403": "The key may not use this model.",
    "404": "No engine serves this model.",
    "413": "Request body too large.",
    "429": "Rate limit reached (see retry-after).",
    "502": "The engine failed.",
    "503": "No healthy engine can take the request.",
    "504": "The engine did not answer in time.",
}
_HEADERS = [
    (
        "routing-strategy",
        "Routing strategy (e.g. least-request, prefix-cache); default: the key's, else the gateway's.",
    ),
    ("x-request-id", "Request id echoed in the response (generated when absent or malformed)."),
    ("x-session-id", "Session key passed to session-affinity routing."),
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(ErrorResponse)}}}


def _generation(model: type[BaseModel], summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "operationId": model.__name__[0].lower() + model.__name__[1:],
            "parameters": [
                {"name": name, "in": "header", "required": False, "description": text, "schema": {"type": "string"}}
                for name, text in _HEADERS
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(model)}}},
            "responses": {
                "200": {
                    "description": "The engine's response: JSON, or server-sent events when `stream` is true.",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {
                            "schema": {
                                "description": "One event: data is a JSON chunk, then an error object on a broken "
                                "stream, and finally [DONE].",
                                "type": "object",
                                "properties": {"data": {"type": "string"}},
                            }
                        },
                    },
                },
                **{status: _error(text) for status, text in _GENERATION_ERRORS.items()},
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document as a dict."""
    models: list[type[BaseModel]] = [ChatCompletionRequest, CompletionRequest, ErrorResponse, ModelList]
    _, schemas = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Strata gateway",
            "version": "1",
            "description": "OpenAI-compatible API in front of a fleet of vLLM engines. Fields not described here are "
            "passed to the engine unchanged.",
        },
        "paths": {
            "/v1/chat/completions": _generation(ChatCompletionRequest, "Chat completion (JSON or SSE stream)"),
            "/v1/completions": _generation(CompletionRequest, "Text completion (JSON or SSE stream)"),
            "/v1/models": {
                "get": {
                    "summary": "Models served by at least one live engine",
                    "operationId": "listModels",
                    "responses": {
                        "200": {
                            "description": "OpenAI model list.",
                            "content": {"application/json": {"schema": _ref(ModelList)}},
                        },
                        "401": _error(_GENERATION_ERRORS["401"]),
                    },
                }
            },
        },
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }


def openapi_json() -> bytes:
    """The document as indented JSON with sorted keys (the checked-in file's bytes)."""
    return orjson.dumps(openapi_document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


if __name__ == "__main__":
    import sys

    sys.stdout.buffer.write(openapi_json())
