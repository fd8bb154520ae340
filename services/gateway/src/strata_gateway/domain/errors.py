"""The gateway's errors: one factory per failure, the OpenAI envelope, vLLM's stream error event.

Every client-visible error is ``{"error": {"message", "type", "param", "code"}}``. `type`
follows the status as AIBrix HEAD does (routing.md §9): 400/404/413 `invalid_request_error`,
401 `authentication_error`, 403 `permission_error`, 429 `rate_limit_error`, 503
`overloaded_error`, anything else `api_error`; `code` is a string or null. Errors an engine
returned (4xx) keep the engine's envelope, which puts the integer status in `code`.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from strata_gateway.domain.ports import GatewayError

__all__ = [
    "CLIENT_CLOSED",
    "bad_gateway",
    "bad_request",
    "body_too_large",
    "envelope",
    "error_type",
    "gateway_timeout",
    "internal_error",
    "model_not_allowed",
    "model_not_found",
    "no_engine",
    "normalize_upstream_error",
    "stream_error_event",
    "unknown_strategy",
]

CLIENT_CLOSED: Final = 499
"""Status recorded (never sent) when the client went away first (nginx's convention)."""

_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_type(status: int) -> str:
    """The envelope `type` of our own errors with HTTP `status`."""
    return _TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    """400: bad JSON, a body that breaks the schema."""
    return GatewayError(400, message, error_type(400), param=param, code=code)


def unknown_strategy(name: str, accepted: list[str]) -> GatewayError:
    """400: the routing-strategy header names a strategy the gateway does not accept."""
    message = f"unknown routing strategy {name!r}; accepted: {', '.join(accepted)}"
    return GatewayError(400, message, error_type(400), param="routing-strategy", code="invalid_routing_strategy")


def body_too_large(limit: int) -> GatewayError:
    """413: the body is larger than max_body_bytes."""
    return GatewayError(
        413, f"request body exceeds {limit} bytes", error_type(413), code="request_too_large", param=None
    )


def model_not_found(model: str) -> GatewayError:
    """404: no engine serves `model`."""
    return GatewayError(
        404, f"The model `{model}` does not exist.", error_type(404), param="model", code="model_not_found"
    )


def model_not_allowed(model: str) -> GatewayError:
    """403: the caller's key may not use `model`."""
    message = f"this API key may not use the model `{model}`"
    return GatewayError(403, message, error_type(403), param="model", code="model_not_allowed")


def no_engine(model: str, detail: str = "") -> GatewayError:
    """503: the model exists but no engine of it can take the request now."""
    message = f"no healthy engine serves `{model}`" + (f": {detail}" if detail else "")
    return GatewayError(503, message, error_type(503), code="service_unavailable", headers={"retry-after": "1"})


def bad_gateway(message: str) -> GatewayError:
    """502: the engine failed (connection, 5xx, broken stream) and no retry was left."""
    return GatewayError(502, message, error_type(502), code="upstream_error")


def gateway_timeout(message: str) -> GatewayError:
    """504: the engine did not answer in time."""
    return GatewayError(504, message, error_type(504), code="upstream_timeout")


def internal_error() -> GatewayError:
    """500: a bug; details go to the log, not to the client."""
    return GatewayError(500, "internal gateway error", error_type(500), code="internal_error")


def envelope(error: GatewayError) -> bytes:
    """The JSON body of `error`."""
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return orjson.dumps(body)


def normalize_upstream_error(status: int, body: bytes) -> bytes:
    """The body to relay for an engine's 4xx: its own envelope unchanged, anything else wrapped.

    vLLM's current envelope is relayed byte for byte; the older flat form
    (``{"object": "error", "message": ...}``) and non-JSON bodies are wrapped.
    """
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return body
        if isinstance(parsed.get("message"), str):
            code = parsed.get("code", status)
            wrapped = {
                "message": parsed["message"],
                "type": parsed.get("type") if isinstance(parsed.get("type"), str) else error_type(status),
                "param": parsed.get("param") if isinstance(parsed.get("param"), str) else None,
                "code": code if isinstance(code, int | str) else status,
            }
            return orjson.dumps({"error": wrapped})
    text = body.decode(errors="replace").strip()[:1000] or f"engine returned HTTP {status}"
    return orjson.dumps({"error": {"message": text, "type": error_type(status), "param": None, "code": status}})


def stream_error_event(error: GatewayError) -> bytes:
    """The SSE event that ends a broken stream, in vLLM's style (integer status as `code`).

    The caller follows it with ``data: [DONE]``.
    """
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.status}}
    return b"data: " + orjson.dumps(body) + b"\n\n"
