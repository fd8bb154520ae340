"""HTTP to the engines: one keep-alive pool, and every failure classified once.

:class:`UpstreamClient` posts a body to an engine and returns the response once its
head arrived. Failures become :class:`UpstreamFailure` with a `kind`:

| kind | cause | retryable (before the client saw a byte) |
| --- | --- | --- |
| `connect` | refused, unreachable, connect timeout | yes |
| `status_5xx` | the engine answered 5xx | yes |
| `disconnect` | the connection dropped, broken body | yes |
| `timeout` | no byte for `idle_timeout_s`, or the request deadline passed | no (504) |

Timeouts: `sock_connect` = connect_timeout_s, `sock_read` = idle_timeout_s (silence
between bytes, first byte included), and the caller's monotonic deadline bounds the whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from strata_gateway.domain.errors import bad_gateway, gateway_timeout
from strata_gateway.domain.ports import GatewayError

__all__ = ["UpstreamClient", "UpstreamFailure", "classify", "new_session"]


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
    """Map an aiohttp / asyncio exception from an engine exchange to an UpstreamFailure."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
        return UpstreamFailure("connect", engine_id, _describe(exc))
    if isinstance(exc, TimeoutError):  # SocketTimeoutError, or the request deadline
        return UpstreamFailure("timeout", engine_id, "no response in time")
    return UpstreamFailure("disconnect", engine_id, _describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def new_session(connect_timeout_s: float, idle_timeout_s: float, max_connections: int) -> aiohttp.ClientSession:
    """The process's upstream session (create inside the event loop, close at shutdown)."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=idle_timeout_s)
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=30)
    return aiohttp.ClientSession(
        timeout=timeout, connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
    )


class UpstreamClient:
    """Posts requests to engines over one shared session.

    Args:
        session: the keep-alive pool (owned by the app).
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def post(
        self, engine_id: str, url: str, body: bytes, headers: Mapping[str, str], deadline: float
    ) -> aiohttp.ClientResponse:
        """POST `body` to `url`; returns the response once its head arrived.

        A 5xx is read, released and raised as `status_5xx`; other statuses are returned
        for the caller to read and release.

        Args:
            engine_id: for errors and logs.
            url: full URL of the engine endpoint.
            body: request body (JSON).
            headers: request headers.
            deadline: event-loop time by which the head must have arrived.

        Raises:
            UpstreamFailure: the attempt failed.
        """
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._session.post(url, data=body, headers=headers)
                if response.status >= 500:
                    text = (await response.read())[:500].decode(errors="replace")
                    response.release()
                    raise UpstreamFailure("status_5xx", engine_id, f"HTTP {response.status}: {text}")
        except UpstreamFailure:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise classify(exc, engine_id) from exc
        return response

    async def read(self, engine_id: str, response: aiohttp.ClientResponse, deadline: float) -> bytes:
        """The whole body of `response` (released afterwards).

        Raises:
            UpstreamFailure: the body broke off or took too long.
        """
        try:
            async with asyncio.timeout_at(deadline):
                return await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise classify(exc, engine_id) from exc
        finally:
            response.release()
