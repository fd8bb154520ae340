"""A lean HTTP/1.1 server for the gateway: asyncio Protocols + httptools.

aiohttp's server side (protocol, request object, middleware, router, writer) cost more
CPU per proxied request than anything else in the gateway; this one runs on the
default loop and on uvloop, and knows only what the gateway serves (the request and
response types are in :mod:`strata_gateway.adapters.http_messages`):

    Http1Server ─ listener (reuse_address; port 0 = a free one) + its live connections
      _Connection (Protocol) ─ httptools ─▶ Request: head, body buffered as it arrives
        ─▶ queue (pipelined requests: served one at a time, in order)
        ─▶ a task per request: app(request) ─▶ Response: head + body, one write
                                            └▶ ResponseStream: head + chunks, each write sent
                                               at once; it waits while the transport is paused
        ─▶ keep-alive: the next queued request, else idle (closed after `keepalive_s` without a head)

| situation | what happens |
| --- | --- |
| malformed request head | `error_page(400)`, then close |
| head over 64 KiB | `error_page(431)`, then close |
| body over `max_body_bytes` (declared or actual) | not buffered; `read()` raises BodyTooLarge; close after |
| broken body framing | `read()` raises MalformedBody; close after |
| `Expect: 100-continue` | `100 Continue` when the handler first waits for the body |
| client gone (EOF, reset) | the request's task is cancelled; stream writes raise ClientDisconnected |
| the app fails after a stream's head went out | the connection is aborted (no second response) |
| `Connection: close`, HTTP/1.0 without keep-alive, `Upgrade` | close after the response (no upgrades) |
| closing while the client may still send (error, unread body) | half-close, drop its bytes ≤ `LINGER_S`, close |
| `stop()` | stop listening, close idle connections, the rest after their response (abort after `grace_s`) |

Responses carry no Date or Server header; header names are written in lower case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Final, cast

import httptools

from strata_gateway.adapters.http_messages import (
    App,
    BodyTooLarge,
    ClientDisconnected,
    ErrorPage,
    MalformedBody,
    Request,
    Response,
    ResponseStream,
)

__all__ = ["Http1Server"]

MAX_HEAD: Final = 64 * 1024
"""Largest request head (request line and headers) accepted (else 431)."""
KEEPALIVE_S: Final = 75.0
"""An open connection without a complete request head for this long is closed."""
MAX_QUEUED: Final = 8
"""Pipelined requests parsed ahead of the one being served before reading pauses."""
LINGER_S: Final = 2.0
"""After an error response the client's further bytes are read and dropped this long before
the close (closing on unread bytes resets the connection, which can lose the response)."""

_log = logging.getLogger(__name__)
_METHODS: Final = {m.encode(): m for m in ("GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS")}
_SLICE: Final = 16 * 1024  # larger reads are parsed in slices of this size (see _feed)


class Http1Server:
    """Serves `app` over HTTP/1.1 on host:port (create and start inside the running loop).

    Args:
        app: answers each request (see :data:`App`).
        host: interface to bind.
        port: port to bind (0 = a free one; :meth:`start` returns it).
        error_page: answers errors found outside the app (see :data:`ErrorPage`).
        max_body_bytes: largest request body buffered (see :class:`BodyTooLarge`).
        keepalive_s: how long a connection may go without a complete request head.
    """

    def __init__(
        self,
        app: App,
        host: str,
        port: int,
        *,
        error_page: ErrorPage,
        max_body_bytes: int,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.app = app
        self.error_page = error_page
        self.max_body_bytes = max_body_bytes
        self.keepalive_s = keepalive_s
        self.host = host
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._listener: asyncio.AbstractServer | None = None
        self._emptied: asyncio.Event | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        listener = await self.loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True, backlog=1024
        )
        self._listener = listener
        self.port = listener.sockets[0].getsockname()[1]
        return self.port

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening, close idle connections and the others after their response.

        Connections still busy after `grace_s` are aborted (their requests cancelled).
        """
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self.stopping = True
        listener.close()
        for conn in list(self.connections):
            conn.shutdown()
        if not await self._until_closed(grace_s):
            for conn in list(self.connections):
                conn.abort()
            await self._until_closed(1.0)
        await listener.wait_closed()

    def forget(self, conn: _Connection) -> None:
        """A connection closed (called once, from its connection_lost)."""
        self.connections.discard(conn)
        if not self.connections and self._emptied is not None:
            self._emptied.set()

    async def _until_closed(self, timeout: float) -> bool:
        if not self.connections:
            return True
        self._emptied = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._emptied.wait(), timeout)
        return not self.connections


class _Connection(asyncio.Protocol):
    """One client connection: the parser's callbacks, the request queue, the writer's flow control."""

    def __init__(self, server: Http1Server) -> None:
        self._server = server
        self.loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self.lost = False
        self._closing = False  # close after the current response (the server stops)
        self._done_reading = False  # broken or upgraded: no further request will be read
        self._read_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._streamed = False  # the current request's stream sent its head
        self._queue: deque[Request] = deque()
        self._final: Response | None = None  # an error page to send once the queue is served
        self._parsing: Request | None = None  # the request whose body is arriving
        # the head being parsed
        self._in_head = False
        self._head_fresh = False
        self._head_size = 0  # bytes of the head's parts seen by the callbacks
        self._head_raw = 0  # bytes of whole reads that fell inside the head
        self._url = b""
        self._headers: dict[str, str] = {}
        # keep-alive
        self._idle = False
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- used by requests and responses ---------------------------------------------------

    def write(self, data: bytes) -> None:
        """Hand `data` to the transport unless the client is gone."""
        if not self.lost and self._transport is not None:
            self._transport.write(data)

    async def send(self, data: bytes) -> None:
        """Write `data`, then wait while the transport's buffer is over its high-water mark.

        Raises:
            ClientDisconnected: the client is gone.
        """
        transport = self._transport
        if self.lost or transport is None or transport.is_closing():
            raise ClientDisconnected("the client closed the connection")
        transport.write(data)
        if self._write_paused and not await self._writable():
            raise ClientDisconnected("the client closed the connection")

    async def _writable(self) -> bool:
        """Until the transport's buffer is below its low-water mark again; False if the client went away."""
        while self._write_paused and not self.lost:
            self._drain = self.loop.create_future()
            await self._drain
        return not self.lost

    def must_close(self, request: Request) -> bool:
        """Whether the connection closes after the response to `request` (decided at its head)."""
        return (
            self._closing
            or not request.keep_alive
            or not request.complete
            or request.error is not None
            or (self._done_reading and not self._queue and self._final is None)
        )

    def streaming(self) -> None:
        """A stream's head is going out: only that stream's clean end may follow."""
        self._streamed = True

    def shutdown(self) -> None:
        """The server stops: close now if idle, else after the current response."""
        self._closing = True
        if self._task is None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now (its request, if any, is cancelled by connection_lost)."""
        if self._transport is not None and not self.lost:
            self._transport.abort()

    # -- serving --------------------------------------------------------------------------

    def _next(self) -> None:
        """Serve the next queued request; else send the pending error page, close, or go idle."""
        transport = self._transport
        assert transport is not None
        if self._queue and not self._closing:
            request = self._queue.popleft()
            self._task = self.loop.create_task(self._serve(request))
            if self._read_paused and len(self._queue) < MAX_QUEUED and not self._done_reading:
                self._read_paused = False
                transport.resume_reading()
        elif self._final is not None:
            transport.write(self._final.encode(close=True))
            self._close(linger=True)
        elif self._closing or self._done_reading:
            self._close(linger=self._done_reading)
        else:
            self._idle = True
            self._idle_since = self.loop.time()
            if self._timer is None:
                self._timer = self.loop.call_at(self._idle_since + self._server.keepalive_s, self._on_timer)

    async def _serve(self, request: Request) -> None:
        try:
            reply = await self._server.app(request)
        except asyncio.CancelledError:
            self.abort()  # the client went away, or the server stops: nothing more on this connection
            raise
        except Exception:  # noqa: BLE001 - the app failed to answer: logged, answered 500
            _log.exception("unhandled error", extra={"path": request.path})
            reply = self._server.error_page(500)
        streamed, self._streamed = self._streamed, False
        if self.lost:
            return
        if streamed or isinstance(reply, ResponseStream):
            if not (isinstance(reply, ResponseStream) and reply.ended):  # cut short: no valid end to send
                self.abort()
                return
            close = reply.close or self._closing
        else:
            close = self.must_close(request)
            try:
                data = reply.encode(close=close, http10=request.http10, head_only=request.method == "HEAD")
            except ValueError:
                _log.exception("unwritable response", extra={"path": request.path})
                data = self._server.error_page(500).encode(close=close)
            self.write(data)
            if self._write_paused and not close and not await self._writable():
                return  # (a slow reader takes this response before the next one is made)
        self._task = None
        if close:
            self._close(linger=not request.complete or request.error is not None or self._done_reading)
        else:
            self._next()

    def _close(self, *, linger: bool) -> None:
        """Close after what was written; with `linger`, half-close and drop input for up to LINGER_S first."""
        transport = self._transport
        assert transport is not None
        if not linger or transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        self._done_reading = True  # data_received drops what comes; the client's EOF closes the transport
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        transport.write_eof()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(LINGER_S, transport.abort)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._idle or self.lost:
            return  # busy: armed again when idle
        due = self._idle_since + self._server.keepalive_s
        if self.loop.time() >= due:
            assert self._transport is not None
            self._transport.close()
        else:
            self._timer = self.loop.call_at(due, self._on_timer)

    def _stop_reading(self, status: int, reason: str) -> None:
        """No further request is read (what comes is dropped): fail the body in progress, or answer the head."""
        self._done_reading = True
        request = self._parsing
        if request is not None and not request.complete:  # its head was fine: the body broke
            request.fail(MalformedBody(reason))
        elif status:
            self._final = self._server.error_page(status)
        if self._task is None:
            self._next()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self._server.connections.add(self)
        if self._server.stopping:  # accepted as the server stops
            self._closing = True
        self._next()

    def data_received(self, data: bytes) -> None:
        if len(data) <= _SLICE:
            self._feed(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), _SLICE):
            self._feed(view[start : start + _SLICE])

    def _feed(self, data: bytes | memoryview) -> None:
        """Parse `data`; a head still incomplete after it counts its whole size from the next slice on.

        Only the slice in which a head began goes uncounted, so a head that never ends is
        refused once it passes MAX_HEAD + one slice; a complete head is measured exactly.
        """
        if self._done_reading:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_reading(0, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            _log.debug("malformed request: %r", exc)
            self._stop_reading(431 if max(self._head_size, self._head_raw) > MAX_HEAD else 400, repr(exc))
            return
        if self._in_head:
            if self._head_fresh:  # the head began in this slice: only its parts are counted
                self._head_fresh = False
            else:
                self._head_raw += len(data)
                if self._head_raw > MAX_HEAD:
                    self._stop_reading(431, "request head too large")

    def connection_lost(self, exc: Exception | None) -> None:  # also after the client's EOF
        self.lost = True
        self._server.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = self._head_fresh = True
        self._head_size = self._head_raw = 0
        self._url = b""
        self._headers = {}

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def _count(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            raise ValueError("request head too large")  # feed_data raises HttpParserCallbackError

    def on_headers_complete(self) -> None:
        self._in_head = self._idle = False
        parser = self._parser
        method = parser.get_method()
        headers = self._headers
        request = Request(
            self,
            _METHODS.get(method) or method.decode("latin-1"),
            self._url,
            headers,
            http10=parser.get_http_version() == "1.0",
            keep_alive=parser.should_keep_alive(),
        )
        limit = self._server.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            request.error = BodyTooLarge(limit)
        self._parsing = request
        self._queue.append(request)
        if self._task is None:
            self._next()
        elif len(self._queue) >= MAX_QUEUED and not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.add(body, self._server.max_body_bytes)

    def on_message_complete(self) -> None:
        request, self._parsing = self._parsing, None
        if request is not None:
            request.complete = True
            request.wake()
