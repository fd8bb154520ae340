"""vLLM's error envelope: the exception the handlers raise, and how it is written.

Every client-visible failure is ``{"error": {"message", "type", "param", "code"}}`` with
the integer HTTP status as ``code`` (vLLM 0.32, ``serve/engine/protocol.py`` ErrorInfo).
Three message styles exist there and are reproduced here:

* request checks (vLLM's ``VLLMValidationError``): ``type`` BadRequestError and the
  message suffixed with ``(parameter=..., value=...)``;
* schema failures (FastAPI's ``RequestValidationError``): ``type`` "Bad Request" and
  ``N validation error(s):`` followed by one pydantic error dict per line;
* others (unknown model, engine rejection): plain message, explicit type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

import orjson
from aiohttp import web
from pydantic import ValidationError

__all__ = [
    "ApiError",
    "from_exception",
    "from_validation_error",
    "invalid",
    "json_response",
    "parse_json_body",
    "schema_error",
    "sse_error_event",
]

_MAX_REPORTED_ERRORS: Final = 10
_MAX_INPUT_CHARS: Final = 200
_MAX_ERROR_CHARS: Final = 1000
_BRACKETED: Final = re.compile(r"[\[\]{}()]")
# pydantic-core's schema-kind names that appear in `loc` but are not field names.
_INTERNAL_LOC: Final = frozenset(
    [
        "function-wrap",
        "function-after",
        "function-before",
        "function-plain",
        "json-or-python",
        "lax-or-strict",
        "chain",
        "default",
        "nullable",
        "tagged-union",
        "union",
        "call",
        "arguments",
        "is-instance",
        "is-subclass",
        "callable",
        "str",
        "int",
        "float",
        "bool",
        "bytes",
        "bytearray",
        "list",
        "tuple",
        "dict",
        "set",
        "frozenset",
        "complex",
        "none",
        "nonetype",
    ]
)


class ApiError(Exception):
    """A request that fails with vLLM's error envelope.

    Attributes:
        message: the client-visible message.
        err_type: the envelope's ``type`` (``BadRequestError``, ``NotFoundError``, ...).
        status: the HTTP status, also the envelope's ``code``.
        param: the offending parameter, or None.
    """

    def __init__(
        self, message: str, *, err_type: str = "BadRequestError", status: int = 400, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.err_type = err_type
        self.status = status
        self.param = param

    def body(self) -> dict[str, Any]:
        """The envelope as a dict (key order as vLLM's ErrorResponse)."""
        return {"error": {"message": self.message, "type": self.err_type, "param": self.param, "code": self.status}}

    def response(self) -> web.Response:
        """The envelope as a JSON response with the error's status."""
        return json_response(self.body(), status=self.status)


def invalid(message: str, *, parameter: str | None = None, value: object = None) -> ApiError:
    """A 400 in the style of vLLM's ``VLLMValidationError`` (its ``__str__`` suffix included)."""
    extras = []
    if parameter is not None:
        extras.append(f"parameter={parameter}")
    if value is not None:
        extras.append(f"value={value}")
    text = f"{message} ({', '.join(extras)})" if extras else message
    return ApiError(text, param=parameter)


def from_exception(exc: BaseException) -> ApiError:
    """Classify an unexpected exception as vLLM's ``create_error_response`` does.

    ``ValueError``/``TypeError``/``OverflowError`` (RequestRejected included) are the
    client's fault (400 BadRequestError); anything else is a 500 InternalServerError.
    """
    if isinstance(exc, ValueError | TypeError | OverflowError):
        return ApiError(str(exc))
    return ApiError(str(exc), err_type="InternalServerError", status=HTTPStatus.INTERNAL_SERVER_ERROR.value)


def schema_error(errors: Sequence[object]) -> ApiError:
    """A 400 in the style of vLLM's handler for FastAPI ``RequestValidationError``.

    Args:
        errors: pydantic error dicts whose ``loc`` already starts with ``"body"``, or
            plain strings (the content-type check).
    """
    param = None
    if errors and isinstance(errors[0], dict) and errors[0].get("loc"):
        param = _clean_loc(errors[0]["loc"])
    if errors:
        count = len(errors)
        label = "error" if count == 1 else "errors"
        shown = errors[:_MAX_REPORTED_ERRORS]
        message = f"{count} validation {label}:\n" + "".join(f"  {_format_error(err)}\n" for err in shown)
        if count > len(shown):
            message += f"  ...and {count - len(shown)} more {label}\n"
        message = message.rstrip()
    else:
        message = "Validation error"
    return ApiError(message, err_type=HTTPStatus.BAD_REQUEST.phrase, param=param)


def from_validation_error(exc: ValidationError) -> list[dict[str, Any]]:
    """The errors of `exc` as FastAPI reports a request body's: ``loc`` under ``"body"``, no URL."""
    return [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]


def parse_json_body(content_type: str, raw: bytes) -> Any:
    """Decode a request body the way vLLM's FastAPI routes do.

    Raises:
        ApiError: the media type is not application/json, the body is empty, or it is not JSON.
    """
    if content_type.lower().split(";", maxsplit=1)[0].strip() != "application/json":
        raise schema_error(["Unsupported Media Type: Only 'application/json' is allowed"])
    if not raw:
        raise schema_error([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else exc.reason
        err = {"type": "json_invalid", "loc": ("body", pos), "msg": "JSON decode error", "input": {}}
        raise schema_error([{**err, "ctx": {"error": reason}}]) from None


def json_response(body: object, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A compact UTF-8 JSON response (Starlette's JSONResponse bytes: no spaces, no ASCII escaping)."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def sse_error_event(err: ApiError) -> bytes:
    """The SSE event vLLM sends for an error after the stream started (``json.dumps`` spacing)."""
    return f"data: {json.dumps(err.body())}\n\n".encode()


def _format_error(err: object) -> str:
    if isinstance(err, dict):
        err = dict(err)
        if "input" in err:
            err["input"] = _summarize_input(err["input"])
        if isinstance(err.get("loc"), tuple | list):
            err["loc"] = _clean_loc(err["loc"])
    text = str(err)
    return text[:_MAX_ERROR_CHARS] + "...[truncated]" if len(text) > _MAX_ERROR_CHARS else text


def _summarize_input(value: object) -> object:
    if isinstance(value, str):
        return value[:_MAX_INPUT_CHARS] + "...[truncated]" if len(value) > _MAX_INPUT_CHARS else value
    if isinstance(value, bytes | bytearray):
        return f"<{type(value).__name__} of {len(value)} bytes>"
    if isinstance(value, list | tuple | set | frozenset | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    text = str(value)
    return text[:_MAX_INPUT_CHARS] + "...[truncated]" if len(text) > _MAX_INPUT_CHARS else text


def _clean_loc(loc: Sequence[object]) -> str:
    parts = [str(p) for p in loc if not (_BRACKETED.search(str(p)) or str(p).lower() in _INTERNAL_LOC)]
    return ".".join(parts) if parts else ".".join(str(p) for p in loc)
