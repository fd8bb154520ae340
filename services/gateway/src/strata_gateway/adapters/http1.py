"""A lean keep-alive HTTP/1.1 client pool for the engines: asyncio Protocols + httptools.

aiohttp's client cost too much CPU per request; this one runs on the default loop and
on uvloop, and knows only what the gateway needs (POST with a body, Content-Length,
chunked or read-until-close responses):

    UpstreamPool ─ one _HostPool per host:port: idle connections (LIFO), open count, waiters
      exchange ─▶ idle connection, else connect (or wait for a slot) ─▶ write head+body (one write)
               ─▶ head arrived ─▶ UpstreamResponse: status, headers, body as it arrives
      release / close ─▶ back to the pool if reusable, else closed

Timeouts: connect ≤ `connect_timeout_s`; silence between bytes (first byte included) ≤
`idle_timeout_s`, not counted while reading is paused for a slow consumer; the caller's
loop-time deadline bounds the whole. One timer per request covers the last two.

Reuse: a request that fails on a reused connection before any response byte (the engine
closed it while idle) is sent once more on a fresh connection; idle connections are
closed after 30 s. Reading pauses while more than 1 MiB of body waits for the consumer.
Plain `http://` only (engines sit on the cluster network).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TypeVar, cast, overload
from urllib.parse import urlsplit

import httptools

__all__ = [
    "ConnectFailed",
    "ResponseHeaders",
    "UpstreamDisconnected",
    "UpstreamPool",
    "UpstreamResponse",
]

KEEPALIVE_S = 30.0
"""An idle pooled connection is closed after this long."""
HIGH_WATER = 1 << 20
"""Reading pauses while more unread body than this is buffered ..."""
LOW_WATER = HIGH_WATER // 4
"""... and resumes once the consumer brought it down to this."""

_T = TypeVar("_T")


class ConnectFailed(Exception):
    """No connection to the engine: refused, unreachable, unresolvable, connect timeout."""


class UpstreamDisconnected(ConnectionError):
    """The connection closed or broke (malformed response) before the response was complete."""


class ResponseHeaders(Mapping[str, str]):
    """A response's headers, looked up case-insensitively (repeated headers joined by ", ")."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items  # lower-case names

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    @overload
    def get(self, key: str, /) -> str | None: ...
    @overload
    def get(self, key: str, /, default: str | _T) -> str | _T: ...
    def get(self, key: str, /, default: object = None) -> object:
        """The header's value, or `default`."""
        return self._items.get(key.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class UpstreamResponse:
    """An engine's response whose head arrived; the body is read from its connection.

    The owner must end it with :meth:`release` (body read) or :meth:`close` (abandoned);
    iterate :meth:`iter_chunks` to relay the body as it arrives.

    Attributes:
        status: the HTTP status.
        headers: the response headers.
    """

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: Connection) -> None:
        self._conn: Connection | None = conn
        self.status = conn.status
        self.headers = ResponseHeaders(conn.headers)

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case ("" when there is none)."""
        return (self.headers.get("content-type") or "").partition(";")[0].strip().lower()

    def release(self) -> None:
        """Give the connection back to the pool if the body arrived whole and it may be reused, else close it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish()

    def close(self) -> None:
        """Drop the connection (how the engine is told to abort the request)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.drop()

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive (reading resumes as they are taken).

        Raises (while iterating):
            UpstreamDisconnected: the connection dropped before the body was complete.
            TimeoutError: the engine went silent for `idle_timeout_s`, or the deadline passed.
        """
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        while True:
            if conn.chunks:
                return conn.take()
            if conn.complete:
                raise StopAsyncIteration
            if conn.error is not None:
                raise conn.error
            await conn.wait()

    async def _read_all(self, deadline: float) -> bytes:
        conn = self._conn
        if conn is None:
            raise UpstreamDisconnected("the response was already released")
        if not conn.complete:
            conn.set_deadline(deadline)
            conn.unbounded()
            while not conn.complete:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        chunks = conn.chunks
        body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return body


class UpstreamPool:
    """Keep-alive connections to every engine, per host:port (create inside the running loop).

    Args:
        connect_timeout_s: longest a connect may take (then `connect`).
        idle_timeout_s: longest silence of an engine while a response is awaited (then `timeout`).
        max_connections: connections per host:port (0 = unbounded); waiting for one counts
            against the request's deadline.
    """

    def __init__(self, connect_timeout_s: float, idle_timeout_s: float, max_connections: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.closed = False
        self._hosts: dict[tuple[str, int], _HostPool] = {}
        self._targets: dict[str, tuple[_HostPool, bytes]] = {}

    async def exchange(self, url: str, body: bytes, headers: Mapping[str, str], deadline: float) -> Connection:
        """Send one request and wait for the response head; returns the connection holding it.

        Raises:
            ConnectFailed: no connection could be opened.
            UpstreamDisconnected: the connection dropped before the head arrived.
            TimeoutError: the engine was silent too long or the deadline passed.
        """
        target = self._targets.get(url) or self._target(url)
        host, head = target
        block = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if block.count("\n") != len(headers) or block.count("\r") != len(headers):
            raise ValueError("request header names and values may not contain CR or LF")
        payload = b"".join((head, str(len(body)).encode(), b"\r\n", block.encode(), b"\r\n", body))
        conn = host.take_idle() or await host.connect(deadline)
        may_retry = True
        while True:
            try:
                conn.send(payload, deadline)
                await conn.wait_head()
            except UpstreamDisconnected:
                conn.drop()
                if not (may_retry and conn.reused and not conn.got_bytes) or self.closed:
                    raise
            except BaseException:
                conn.drop()  # the engine aborts whatever it started
                raise
            else:
                return conn
            may_retry = False  # the engine closed a pooled connection as it was used: once more, fresh
            conn = await host.connect(deadline)

    async def close(self) -> None:
        """Close every connection, idle or busy; requests waiting for a slot fail."""
        self.closed = True
        for host in self._hosts.values():
            host.close()
        self._hosts.clear()
        self._targets.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    def _target(self, url: str) -> tuple[_HostPool, bytes]:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConnectFailed(f"unsupported engine URL {url!r} (plain http://host:port/path only)")
        port = parts.port or 80
        host = self._hosts.get((parts.hostname, port))
        if host is None:
            host = self._hosts[parts.hostname, port] = _HostPool(self, parts.hostname, port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        head = f"POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: ".encode()
        if len(self._targets) >= 4096:  # engines come and go: forget old URLs now and then
            self._targets.clear()
        target = self._targets[url] = (host, head)
        return target


class _HostPool:
    """The connections to one host:port: idle ones (most recent last), the open count, waiters for a slot."""

    def __init__(self, pool: UpstreamPool, host: str, port: int) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.conns: set[Connection] = set()  # every connection holding a slot (connecting, busy, idle)
        self._idle: list[Connection] = []
        self._slots = 0  # slots held: connections plus connects in progress
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None

    def take_idle(self) -> Connection | None:
        """The most recently pooled live connection, if any."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            conn.pooled = False
            if conn.alive():
                return conn
            conn.drop()
        return None

    async def connect(self, deadline: float) -> Connection:
        """A new connection (waiting for a slot first if the pool is full).

        Raises:
            ConnectFailed: refused, unreachable, timed out after `connect_timeout_s`, pool closed.
            TimeoutError: the deadline passed first.
        """
        pool = self.pool
        if pool.closed:
            raise ConnectFailed("the upstream pool is closed")
        limit = pool.max_connections
        if limit and self._slots >= limit:
            handed = await self._wait_for_slot(deadline)
            if handed is not None:
                return handed  # a connection just released (it answered a moment ago)
        else:
            self._slots += 1
        conn = Connection(self)
        self.conns.add(conn)
        connect_by = pool.loop.time() + pool.connect_timeout_s
        try:
            async with asyncio.timeout_at(min(deadline, connect_by)):
                await pool.loop.create_connection(lambda: conn, self.host, self.port)
        except BaseException as exc:
            conn.drop()
            conn.forget()
            if isinstance(exc, TimeoutError) and connect_by < deadline:
                raise ConnectFailed(f"connect to {self.host}:{self.port} timed out") from None
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
            raise
        return conn

    async def _wait_for_slot(self, deadline: float) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = self.pool.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter
        except BaseException:
            if not waiter.done():
                waiter.cancel()
            if waiter.cancelled() or waiter.exception() is not None:
                with contextlib.suppress(ValueError):  # put / free_slot may have skipped it already
                    self._waiters.remove(waiter)
            elif (handed := waiter.result()) is None:  # a slot was handed over, but we are leaving
                self.free_slot()
            else:
                self.put(handed)
            raise

    def put(self, conn: Connection) -> None:
        """Pool a connection whose response is over (or hand it to a request waiting for a slot)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.pooled = True
        conn.idle_since = self.pool.loop.time()
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = self.pool.loop.call_at(self._idle[0].idle_since + KEEPALIVE_S, self._expire)

    def remove_idle(self, conn: Connection) -> None:
        """Forget a pooled connection that closed."""
        conn.pooled = False
        self._idle.remove(conn)

    def free_slot(self) -> None:
        """A connection is gone (or was never made): its slot goes to a waiter, else back."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: the count stays
                return
        self._slots -= 1

    def close(self) -> None:
        """Close every connection and fail the waiters."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in self._idle:
            conn.pooled = False
        self._idle.clear()
        for conn in list(self.conns):
            conn.drop()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the upstream pool is closed"))

    def _expire(self) -> None:
        """Close the connections idle for KEEPALIVE_S (the oldest are first in the list)."""
        self._sweep = None
        cutoff = self.pool.loop.time() - KEEPALIVE_S
        idle = self._idle
        while idle and idle[0].idle_since <= cutoff:
            conn = idle.pop(0)
            conn.pooled = False
            conn.drop()
        if idle:
            self._sweep = self.pool.loop.call_at(idle[0].idle_since + KEEPALIVE_S, self._expire)


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: a Protocol, the parser's callbacks and the exchange in progress.

    State of an exchange: `send` ─▶ head (status, headers) ─▶ body pieces in `chunks`
    ─▶ `complete`, or `error` (disconnect, malformed response, timeout). The connection
    holds a pool slot from its creation until `forget` (after it closed or failed to open).
    """

    def __init__(self, host: _HostPool) -> None:
        self._host = host
        self._loop = host.pool.loop
        self._idle_timeout = host.pool.idle_timeout_s
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._slot = True
        self.lost = False
        self.pooled = False
        self.reused = False  # a response was read from it before
        self.idle_since = 0.0
        # the exchange in progress
        self.busy = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.complete = False
        self.got_bytes = False
        self.error: BaseException | None = None
        self.chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._unbounded = False
        self._keep_alive = False
        self._until_close = False
        self._informational = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._last_read = 0.0

    # -- driven by the client ------------------------------------------------------------

    def alive(self) -> bool:
        """Whether it may carry a request."""
        return not self.lost and self._transport is not None and not self._transport.is_closing()

    def send(self, payload: bytes, deadline: float) -> None:
        """Start an exchange: write the request, arm the timer (idle timeout and deadline)."""
        self.busy = True
        self.status = 0
        self.head_done = self.complete = self.got_bytes = False
        self.error = None
        self._unbounded = False
        self.headers = {}
        self._deadline = deadline
        self._last_read = self._loop.time()
        if not self.alive():
            self.error = UpstreamDisconnected("the engine closed the pooled connection")
            return
        assert self._transport is not None
        self._arm()
        self._transport.write(payload)

    async def wait_head(self) -> None:
        """Until the head arrived (raises the exchange's error if it failed first)."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self.wait()

    async def wait(self) -> None:
        """Until the protocol has news (more body, the end, an error)."""
        self._waiter = waiter = self._loop.create_future()
        await waiter

    def take(self) -> bytes:
        """The oldest buffered piece of body; reading resumes when the buffer is low again."""
        data = self.chunks.popleft()
        self._buffered -= len(data)
        if self._paused and self._buffered <= LOW_WATER:
            self._resume()
        return data

    def unbounded(self) -> None:
        """The consumer takes the whole body at once: no flow control."""
        self._unbounded = True
        if self._paused:
            self._resume()

    def set_deadline(self, deadline: float) -> None:
        """Move the exchange's deadline (the timer is re-armed if it moved earlier)."""
        if deadline < self._deadline and self._timer is not None:
            self._timer.cancel()
            self._deadline = deadline
            self._arm()
        self._deadline = deadline

    def finish(self) -> None:
        """The exchange is over: pool the connection if the response came whole and allows reuse, else close it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not (self.complete and self._keep_alive and self.alive()):
            self.drop()
            return
        self.busy = False
        self.reused = True
        self.chunks.clear()
        self._buffered = 0
        if self._paused:
            self._resume()
        self._host.put(self)

    def drop(self) -> None:
        """Close the connection now (the engine sees the disconnect)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None and not self.lost:
            self._transport.abort()

    def forget(self) -> None:
        """Give the slot back (once; the connection is gone or never opened)."""
        if self._slot:
            self._slot = False
            self._host.conns.discard(self)
            self._host.free_slot()

    def _arm(self) -> None:
        due = min(self._deadline, self._last_read + self._idle_timeout)
        self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self.busy or self.complete or self.lost:
            return
        now = self._loop.time()
        if now >= self._deadline:
            self._fail(TimeoutError("the request deadline passed"))
        elif self._paused:  # the consumer holds the body up, not the engine
            self._last_read = now
            self._arm()
        elif now - self._last_read >= self._idle_timeout:
            self._fail(TimeoutError(f"no byte from the engine for {self._idle_timeout:g} s"))
        else:
            self._arm()

    def _fail(self, exc: BaseException) -> None:
        """The exchange broke: record why (unless the response was already complete), close."""
        if self.busy and not self.complete and self.error is None:
            self.error = exc
        self._wake()
        self.drop()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _resume(self) -> None:
        self._paused = False
        self._last_read = self._loop.time()
        if self._transport is not None and not self.lost:
            self._transport.resume_reading()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # nothing was asked: the engine misbehaves
            self.drop()
            return
        self._last_read = self._loop.time()
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(UpstreamDisconnected(f"malformed response from the engine: {exc!r}"))
            return
        if self._waiter is not None:
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pooled:
            self._host.remove_idle(self)
        if self.busy and not self.complete:
            if self.head_done and self._until_close and exc is None:
                self.complete = True  # the body was framed by the close
            elif self.error is None:
                reason = f": {exc!r}" if exc is not None else ""
                self.error = UpstreamDisconnected(f"the engine closed the connection{reason}")
            self._wake()
        self.forget()

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.head_done:  # a second response to one request
            raise UpstreamDisconnected("unexpected data after the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: informational, the real head follows
            self._informational = True
            self.headers = {}
            return
        self.status = status
        self._keep_alive = self._parser.should_keep_alive()
        headers = self.headers
        self._until_close = (
            status not in (204, 304)
            and "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
        )
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and not self._unbounded and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
