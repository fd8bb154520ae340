"""HTTP details of the client side: header names, request ids, body reads, the route table's types.

    Routes = {path: {method: Handler}}    Handler(request, request_id) ─▶ Response | ResponseStream

Header names are lower case (the server lower-cases request header names).
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from typing import Final

from strata_gateway.adapters.http_messages import BodyTooLarge, MalformedBody, Reply, Request, Response
from strata_gateway.domain.errors import bad_request, body_too_large
from strata_runtime.probes import ProbeAnswer, Probes

__all__ = [
    "ENGINE_HEADER",
    "FALLBACK_HEADER",
    "REQUEST_ID_HEADER",
    "SESSION_HEADER",
    "STRATEGY_HEADER",
    "STRATEGY_OUT_HEADER",
    "Handler",
    "Routes",
    "client_request_id",
    "new_request_id",
    "probe_routes",
    "read_body",
]

REQUEST_ID_HEADER: Final = "x-request-id"
STRATEGY_HEADER: Final = "routing-strategy"
SESSION_HEADER: Final = "x-session-id"
ENGINE_HEADER: Final = "x-strata-engine"
STRATEGY_OUT_HEADER: Final = "x-strata-strategy"
FALLBACK_HEADER: Final = "x-strata-route-fallback"

Handler = Callable[[Request, str], Awaitable[Reply]]
"""Answers one request, given its request id; raises GatewayError for error envelopes."""
Routes = dict[str, dict[str, Handler]]
"""Path ─▶ method ─▶ handler (a GET handler answers HEAD too)."""

_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


_ID_POOL: list[str] = []
os.register_at_fork(after_in_child=_ID_POOL.clear)  # a forked child must not hand out its parent's ids


def new_request_id() -> str:
    """A fresh request id: 128 bits from the OS's random source, hex.

    The bits are drawn 256 ids at a time (one system call instead of one per request).
    """
    if not _ID_POOL:
        pool = os.urandom(16 * 256).hex()
        _ID_POOL.extend(f"req-{pool[i : i + 32]}" for i in range(0, len(pool), 32))
    return _ID_POOL.pop()


def client_request_id(request: Request) -> str | None:
    """The client's x-request-id when it is a sane token (≤128 of [A-Za-z0-9._:-]), else None.

    It is echoed back and kept in the usage record, but never used as the request's key:
    clients reuse ids, and two requests must never share a usage record.
    """
    given = request.headers.get(REQUEST_ID_HEADER)
    return given if given is not None and _CLIENT_ID.fullmatch(given) else None


async def read_body(request: Request) -> bytes:
    """The request body (the server never buffers more than its limit + one chunk).

    Raises:
        GatewayError: 413 when the body (declared or actual) exceeds the limit, 400 when
            its framing broke.
    """
    try:
        return await request.read()
    except BodyTooLarge as exc:
        raise body_too_large(exc.limit) from None
    except MalformedBody as exc:
        raise bad_request(f"malformed request body: {exc}", code="invalid_request") from None


def probe_routes(probes: Probes) -> Routes:
    """GET /healthz, /readyz and /metrics from the service's probes."""

    async def healthz(_: Request, __: str) -> Reply:
        return _response(probes.healthz())

    async def readyz(_: Request, __: str) -> Reply:
        return _response(await probes.readyz())

    async def metrics(_: Request, __: str) -> Reply:
        return _response(probes.metrics())

    return {"/healthz": {"GET": healthz}, "/readyz": {"GET": readyz}, "/metrics": {"GET": metrics}}


def _response(answer: ProbeAnswer) -> Response:
    return Response(answer.status, answer.body, answer.content_type)
