"""The one place where requests meet their handler and exceptions become HTTP error envelopes.

    request ─▶ request id ─▶ route (404 unknown path, 405 + Allow wrong method) ─▶ handler
            ─▶ GatewayError: its status, envelope and headers (e.g. retry-after)
            ─▶ any other exception: logged with its traceback, 500 without details
            ─▶ cancellation (the client went away): passes through, nothing is written

Every request gets a new, unique request id (its usage record's key); every response
carries `x-request-id`: the client's own when it sent one, else that id. Errors the server finds
before a request reaches the app (malformed HTTP 400, head too large 431) are enveloped
too, with a new id.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from strata_gateway.adapters.http_messages import Reply, Request, Response
from strata_gateway.domain.errors import envelope, error_type, internal_error
from strata_gateway.domain.ports import GatewayError
from strata_gateway.handlers import http

__all__ = ["Dispatcher", "error_response"]

_log = logging.getLogger(__name__)
_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    431: "request_header_fields_too_large",
}


def error_response(error: GatewayError, request_id: str) -> Response:
    """The HTTP response of `error`."""
    headers = {**error.headers, http.REQUEST_ID_HEADER: request_id}
    return Response(error.status, envelope(error), "application/json", headers)


def _echoed(request: Request, request_id: str) -> str:
    """The x-request-id a response carries: the client's own, else the request's id."""
    return http.client_request_id(request) or request_id


def _http_error(status: int, **headers: str) -> GatewayError:
    return GatewayError(status, HTTPStatus(status).phrase, error_type(status), code=_CODES.get(status), headers=headers)


class Dispatcher:
    """The gateway's HTTP app: routes each request and answers every failure with an envelope.

    Args:
        routes: path ─▶ method ─▶ handler.
    """

    def __init__(self, routes: http.Routes) -> None:
        self._routes = routes
        self._allow = {path: ", ".join(sorted({*methods, "HEAD"} if "GET" in methods else methods))
                       for path, methods in routes.items()}  # fmt: skip

    async def __call__(self, request: Request) -> Reply:
        """Answer `request` (see the module docstring)."""
        request_id = http.new_request_id()
        try:
            reply = await self._handler(request)(request, request_id)
        except GatewayError as exc:
            return error_response(exc, _echoed(request, request_id))
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, answered without details
            _log.exception("unhandled error", extra={"request_id": request_id, "path": request.path})
            return error_response(internal_error(), _echoed(request, request_id))
        if isinstance(reply, Response) and http.REQUEST_ID_HEADER not in reply.headers:  # the proxy sets its own
            reply.headers[http.REQUEST_ID_HEADER] = _echoed(request, request_id)
        return reply

    def error_page(self, status: int) -> Response:
        """The envelope for an error found outside the handlers (malformed HTTP, head too large, a bug)."""
        error = internal_error() if status >= 500 else _http_error(status)
        return error_response(error, http.new_request_id())

    def _handler(self, request: Request) -> http.Handler:
        methods = self._routes.get(request.path)
        if methods is None:
            raise _http_error(404)
        handler = methods.get(request.method)
        if handler is None and request.method == "HEAD":
            handler = methods.get("GET")
        if handler is None:
            raise _http_error(405, allow=self._allow[request.path])
        return handler
