"""HTTP to the engines: posts over the keep-alive pool, and every failure classified once.

:class:`UpstreamClient` posts a body to an engine and returns the response once its
head arrived (the pool and its protocol are in :mod:`strata_gateway.adapters.http1`).
Failures become :class:`UpstreamFailure` with a `kind`:

| kind | cause | retryable (before the client saw a byte) |
| --- | --- | --- |
| `connect` | refused, unreachable, connect timeout | yes |
| `status_5xx` | the engine answered 5xx | yes |
| `disconnect` | the connection dropped, broken body | yes |
| `timeout` | no byte for `idle_timeout_s`, or the request deadline passed | no (504) |
"""

from __future__ import annotations

from collections.abc import Mapping

from strata_gateway.adapters.http1 import ConnectFailed, UpstreamDisconnected, UpstreamPool, UpstreamResponse
from strata_gateway.domain.errors import bad_gateway, gateway_timeout
from strata_gateway.domain.ports import GatewayError

__all__ = [
    "ConnectFailed",
    "UpstreamClient",
    "UpstreamDisconnected",
    "UpstreamFailure",
    "UpstreamPool",
    "UpstreamResponse",
    "classify",
    "new_session",
]


class UpstreamFailure(Exception):
    """One failed attempt at an engine.

    Attributes:
        kind: connect | status_5xx | disconnect | timeout.
        engine_id: the engine that failed.
        detail: what happened, for logs and the client's message.
    """

    def __init__(self, kind: str, engine_id: str, detail: str) -> None:
        super().__init__(f"engine {engine_id}: {kind}: {detail}")
        self.kind = kind
        self.engine_id = engine_id
        self.detail = detail

    @property
    def retryable(self) -> bool:
        """Whether another engine may be tried (only if the client has seen nothing yet)."""
        return self.kind != "timeout"

    def to_error(self) -> GatewayError:
        """The client-facing error: 504 for timeouts, else 502."""
        message = f"engine {self.engine_id} failed: {self.detail}"
        return gateway_timeout(message) if self.kind == "timeout" else bad_gateway(message)


def classify(exc: BaseException, engine_id: str) -> UpstreamFailure:
    """Map an exception from an engine exchange to an UpstreamFailure.

    :class:`ConnectFailed` and `ConnectionRefusedError` are `connect`, `TimeoutError`
    (idle timeout or deadline) is `timeout`, anything else (:class:`UpstreamDisconnected`,
    `OSError`) is `disconnect`.
    """
    if isinstance(exc, ConnectFailed | ConnectionRefusedError):
        return UpstreamFailure("connect", engine_id, _describe(exc))
    if isinstance(exc, TimeoutError):
        return UpstreamFailure("timeout", engine_id, "no response in time")
    return UpstreamFailure("disconnect", engine_id, _describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def new_session(connect_timeout_s: float, idle_timeout_s: float, max_connections: int) -> UpstreamPool:
    """The process's upstream pool (create inside the event loop, close at shutdown)."""
    return UpstreamPool(connect_timeout_s, idle_timeout_s, max_connections)


class UpstreamClient:
    """Posts requests to engines over one shared pool.

    Args:
        session: the keep-alive pool (owned by the app).
    """

    def __init__(self, session: UpstreamPool) -> None:
        self._pool = session

    async def post(
        self, engine_id: str, url: str, body: bytes, headers: Mapping[str, str], deadline: float
    ) -> UpstreamResponse:
        """POST `body` to `url`; returns the response once its head arrived.

        A 5xx is read, released and raised as `status_5xx`; other statuses are returned
        for the caller to read and release (or close).

        Args:
            engine_id: for errors and logs.
            url: full `http://host:port/path` URL of the engine endpoint (parsed once per string).
            body: request body (JSON).
            headers: request headers (Host and Content-Length are added here).
            deadline: event-loop time by which the whole exchange must be over.

        Raises:
            UpstreamFailure: the attempt failed.
        """
        try:
            conn = await self._pool.exchange(url, body, headers, deadline)
        except (ConnectFailed, OSError) as exc:  # OSError includes TimeoutError
            raise classify(exc, engine_id) from exc
        response = UpstreamResponse(conn)
        if response.status >= 500:
            text = (await self.read(engine_id, response, deadline))[:500].decode(errors="replace")
            raise UpstreamFailure("status_5xx", engine_id, f"HTTP {response.status}: {text}")
        return response

    async def read(self, engine_id: str, response: UpstreamResponse, deadline: float) -> bytes:
        """The whole body of `response` (released afterwards: pooled again, or closed if not reusable).

        Raises:
            UpstreamFailure: the body broke off or took too long.
        """
        try:
            return await response._read_all(deadline)
        except OSError as exc:  # UpstreamDisconnected, TimeoutError
            raise classify(exc, engine_id) from exc
        finally:
            response.release()
