"""HTTP details of the client side: request ids, bounded body reads, response headers."""

from __future__ import annotations

import re
import uuid
from typing import Final

from aiohttp import web

from strata_gateway.domain.errors import body_too_large

__all__ = [
    "ENGINE_HEADER",
    "FALLBACK_HEADER",
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "SESSION_HEADER",
    "STRATEGY_HEADER",
    "STRATEGY_OUT_HEADER",
    "read_body",
    "request_id_of",
]

REQUEST_ID_HEADER: Final = "x-request-id"
STRATEGY_HEADER: Final = "routing-strategy"
SESSION_HEADER: Final = "x-session-id"
ENGINE_HEADER: Final = "x-strata-engine"
STRATEGY_OUT_HEADER: Final = "x-strata-strategy"
FALLBACK_HEADER: Final = "x-strata-route-fallback"
REQUEST_ID: Final = web.RequestKey("strata_request_id", str)
"""Where the error middleware leaves the request id for the handlers."""

_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_CHUNK: Final = 64 * 1024


def request_id_of(request: web.Request) -> str:
    """The client's x-request-id when it is a sane token (≤128 of [A-Za-z0-9._:-]), else a new one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _CLIENT_ID.fullmatch(given) else f"req-{uuid.uuid4().hex}"


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, read without ever holding more than `limit` + one chunk.

    Raises:
        GatewayError: 413 when the body (declared or actual) exceeds `limit`.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise body_too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        parts.append(chunk)
    return b"".join(parts)
