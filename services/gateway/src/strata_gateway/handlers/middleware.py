"""The one place where exceptions become HTTP error envelopes.

Every response gets `x-request-id` (the client's, or a new one). A GatewayError becomes
its status and envelope (plus its headers, e.g. retry-after); aiohttp's own HTTP errors
(unknown path, wrong method) get the envelope too; anything else is logged and answered
500 without details. Cancellation (the client went away) passes through untouched.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from strata_gateway.domain.errors import envelope, error_type, internal_error
from strata_gateway.domain.ports import GatewayError
from strata_gateway.handlers import http

__all__ = ["error_middleware", "error_response"]

_log = logging.getLogger(__name__)


def error_response(error: GatewayError, request_id: str) -> web.Response:
    """The HTTP response of `error`."""
    response = web.Response(status=error.status, body=envelope(error), headers=error.headers)
    response.content_type = "application/json"
    response.headers[http.REQUEST_ID_HEADER] = request_id
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map handler exceptions to envelopes; stamp x-request-id on every response."""
    request_id = http.request_id_of(request)
    request[http.REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except GatewayError as exc:
        return error_response(exc, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status)
        return error_response(GatewayError(exc.status, exc.reason, error_type(exc.status), code=code), request_id)
    except Exception:  # noqa: BLE001 - a bug: logged with its traceback, answered without details
        _log.exception("unhandled error", extra={"request_id": request_id, "path": request.path})
        return error_response(internal_error(), request_id)
    if not response.prepared:
        response.headers.setdefault(http.REQUEST_ID_HEADER, request_id)
    return response
