"""What the gateway's HTTP/1.1 server hands to handlers and takes back from them.

    Request ─ head (method, path, query, lower-case headers) + body buffered as it arrives
      read() ─▶ bytes | BodyTooLarge (413) | MalformedBody (400)
    handler ─▶ Response: status, content type, headers, body ─▶ one write with Content-Length
            └▶ ResponseStream: write(piece)* ─▶ end(); the head goes out with the first piece,
               each piece is sent at once (chunked; delimited by the close for HTTP/1.0)

The connection side (:class:`Channel`) is :mod:`strata_gateway.adapters.http_server`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Final, Protocol
from urllib.parse import urlsplit

__all__ = [
    "App",
    "BodyTooLarge",
    "Channel",
    "ClientDisconnected",
    "ErrorPage",
    "MalformedBody",
    "Reply",
    "Request",
    "Response",
    "ResponseStream",
]

_STATUS_LINES: Final = {s.value: f"HTTP/1.1 {s.value} {s.phrase}" for s in HTTPStatus}
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"


class BodyTooLarge(Exception):
    """The request body exceeds the server's `max_body_bytes` (declared or actual).

    Attributes:
        limit: the server's limit in bytes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class MalformedBody(Exception):
    """The request body's framing broke (bad chunked encoding), or it never came (upgrade)."""


class ClientDisconnected(ConnectionResetError):
    """The client's connection is gone: the response cannot be delivered."""


class Channel(Protocol):
    """The connection a request came on, as its request and response use it."""

    loop: asyncio.AbstractEventLoop

    def write(self, data: bytes) -> None:
        """Hand `data` to the transport unless the client is gone."""

    async def send(self, data: bytes) -> None:
        """Write `data`, waiting while the client reads too slowly; raises ClientDisconnected."""

    def must_close(self, request: Request) -> bool:
        """Whether the connection closes after the response to `request`."""

    def streaming(self) -> None:
        """A stream's head is going out: only that stream's clean end may follow."""


class Request:
    """One request's head, and its body as it arrives (filled in by its connection).

    Attributes:
        method: e.g. "POST".
        path: the URL's path as sent, not percent-decoded.
        query: the query string without "?" ("" when none).
        headers: lower-case names; repeated headers joined by ", ".
        http10: the client speaks HTTP/1.0 (streams are then delimited by the close).
        keep_alive: the client lets the connection carry further requests.
        complete: the whole body arrived.
        error: why the body cannot be had (set before or while it arrives).
    """

    __slots__ = (
        "_chunks",
        "_continued",
        "_size",
        "_waiter",
        "channel",
        "complete",
        "error",
        "headers",
        "http10",
        "keep_alive",
        "method",
        "path",
        "query",
    )

    def __init__(
        self, channel: Channel, method: str, url: bytes, headers: dict[str, str], *, http10: bool, keep_alive: bool
    ) -> None:
        self.channel = channel
        self.method = method
        if url[:1] != b"/":  # absolute-form (a proxy's) or "*"
            url = urlsplit(url).path or b"/"
        path, _, query = url.partition(b"?")
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.headers = headers
        self.http10 = http10
        self.keep_alive = keep_alive
        self.complete = False
        self.error: BodyTooLarge | MalformedBody | None = None
        self._size = 0
        self._chunks: list[bytes] = []
        self._continued = False
        self._waiter: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        """The whole body (call once); sends `100 Continue` first if the client waits for it.

        Raises:
            BodyTooLarge: the body is (or was declared) larger than the server's limit.
            MalformedBody: the body's framing broke.
        """
        while not self.complete and self.error is None:
            if not self._continued and not self.http10 and self.headers.get("expect", "").lower() == "100-continue":
                self._continued = True
                self.channel.write(_CONTINUE)
            self._waiter = self.channel.loop.create_future()
            await self._waiter
        if self.error is not None:
            raise self.error
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return body

    def add(self, piece: bytes, limit: int) -> None:
        """Buffer a piece of the body; past `limit` the body is dropped and `error` set."""
        if self.error is not None:
            return  # a body past the limit is read and dropped
        self._size += len(piece)
        if self._size > limit:
            self.fail(BodyTooLarge(limit))
        else:
            self._chunks.append(piece)

    def fail(self, error: BodyTooLarge | MalformedBody) -> None:
        """The body cannot be had: drop what was buffered, wake the reader."""
        self.error = error
        self._chunks.clear()
        self.wake()

    def wake(self) -> None:
        """Wake a reader waiting for the body (more arrived, it completed, or it failed)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Response:
    """A whole response: written with Content-Length in one write (no body for HEAD).

    Args:
        status: the HTTP status.
        body: the body bytes.
        content_type: the Content-Type value.
        headers: further headers, lower-case names (the response owns the dict).
    """

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = {} if headers is None else headers

    def encode(self, *, close: bool, http10: bool = False, head_only: bool = False) -> bytes:
        """The response's bytes on the wire.

        Raises:
            ValueError: a header name or value holds CR or LF.
        """
        framing = f"content-length: {len(self.body)}"
        head = _head(self.status, self.content_type, self.headers, framing=framing, close=close, http10=http10)
        return head if head_only else head + self.body


class ResponseStream:
    """A response written piece by piece (chunked; delimited by the close for HTTP/1.0).

    The head goes out with the first :meth:`write` (or :meth:`end`); every write is handed
    to the socket at once and waits while the client reads too slowly.

    Args:
        request: the request answered.
        status: the HTTP status.
        content_type: the Content-Type value.
        headers: further headers, lower-case names.

    Raises:
        ValueError: a header name or value holds CR or LF.
    """

    __slots__ = ("_channel", "_chunked", "_head", "close", "ended")

    def __init__(self, request: Request, status: int, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._channel = request.channel
        self._chunked = not request.http10
        self.close = request.http10 or self._channel.must_close(request)
        framing = "transfer-encoding: chunked" if self._chunked else ""
        self._head: bytes | None = _head(
            status, content_type, headers or {}, framing=framing, close=self.close, http10=request.http10
        )
        self.ended = False

    async def write(self, data: bytes) -> None:
        """Send `data` (an empty piece sends nothing).

        Raises:
            ClientDisconnected: the client is gone.
        """
        if not data:
            return
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        await self._send(data)

    async def end(self, data: bytes = b"") -> None:
        """Finish the response: `data` (if any) and the last chunk, in one write.

        Raises:
            ClientDisconnected: the client is gone.
        """
        if self._chunked:
            data = b"%x\r\n%b\r\n%b" % (len(data), data, _LAST_CHUNK) if data else _LAST_CHUNK
        await self._send(data)
        self.ended = True

    async def _send(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
            self._channel.streaming()
        if data:
            await self._channel.send(data)


Reply = Response | ResponseStream
App = Callable[[Request], Awaitable[Reply]]
"""Answers one request; any exception but cancellation becomes `error_page(500)`."""
ErrorPage = Callable[[int], Response]
"""The response for the status of an error found outside the app (400, 431, 500)."""


def _head(status: int, content_type: str, headers: dict[str, str], *, framing: str, close: bool, http10: bool) -> bytes:
    lines = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} ", f"content-type: {content_type}"]
    if framing:
        lines.append(framing)
    lines.extend([f"{name}: {value}" for name, value in headers.items()])
    if close:
        lines.append("connection: close")
    elif http10:
        lines.append("connection: keep-alive")
    lines.append("\r\n")
    text = "\r\n".join(lines)
    breaks = len(lines)  # every line ends in CRLF, the last one is the empty line
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise ValueError("response header names and values may not contain CR or LF")
    return text.encode()
