"""The gateway's HTTP/1.1 server against raw sockets, on the default loop and on uvloop.

The server runs the gateway's own Dispatcher (routing, envelopes, request ids) over test
routes whose handlers the tests steer (a gate to hold them, counters of starts and
cancellations); clients are raw connections, so framing, pipelining, slow reading and
disconnects happen exactly when a test says.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from strata_gateway.adapters.http_messages import Request, Response, ResponseStream
from strata_gateway.adapters.http_server import Http1Server
from strata_gateway.handlers import http
from strata_gateway.handlers.http import Routes
from strata_gateway.handlers.middleware import Dispatcher
from strata_testing import poll_until

Scenario = Callable[[], Coroutine[Any, Any, None]]
Run = Callable[[Scenario], None]
LIMIT = 4096  # max_body_bytes of the server under test
CHUNK = 64 * 1024
FLOOD = 16 * 1024 * 1024  # four times what the kernel buffers for a connection here (tcp_wmem max: 4 MiB)


@dataclass
class App:
    """The test routes and what their handlers saw."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: int = 0
    requests: list[Request] = field(default_factory=list)
    flood_written: int = 0
    flood_max_buffer: int = 0

    def routes(self) -> Routes:
        return {
            "/echo": {"POST": self.echo},
            "/hold": {"GET": self.hold},
            "/stream": {"GET": self.stream},
            "/flood": {"GET": self.flood},
            "/broken": {"GET": self.broken},
            "/big": {"GET": self.big},
            "/finale": {"GET": self.finale},
        }

    async def echo(self, request: Request, _: str) -> Response:
        self.started.append(request.path)
        body = await http.read_body(request)
        self.finished.append(request.path)
        return Response(200, body, "application/octet-stream")

    async def hold(self, request: Request, _: str) -> Response:
        """Waits for the gate (counting a cancellation)."""
        self.started.append(request.path)
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished.append(request.path)
        return Response(200, b"held", "text/plain")

    async def stream(self, request: Request, _: str) -> ResponseStream:
        """Writes "one", waits for the gate, writes "two"."""
        self.started.append(request.path)
        response = ResponseStream(request, 200, "text/event-stream", {"x-request-id": "r-1"})
        await response.write(b"one")
        await self.gate.wait()
        await response.write(b"two")
        await response.end()
        self.finished.append(request.path)
        return response

    async def finale(self, request: Request, _: str) -> ResponseStream:
        """Writes "one", then ends with "last" (its last piece and the end in one write)."""
        response = ResponseStream(request, 200, "text/event-stream")
        await response.write(b"one")
        await response.end(b"last")
        return response

    async def big(self, request: Request, _: str) -> Response:
        """A whole response of FLOOD / 4 bytes."""
        self.requests.append(request)
        return Response(200, b"z" * (FLOOD // 4), "application/octet-stream")

    async def broken(self, request: Request, _: str) -> ResponseStream:
        """Writes "one", then fails (a bug mid-stream)."""
        response = ResponseStream(request, 200, "text/event-stream")
        await response.write(b"one")
        raise RuntimeError("bug after the head went out")

    async def flood(self, request: Request, _: str) -> ResponseStream:
        """Writes FLOOD bytes in 64 KiB pieces, noting the largest transport buffer seen after a write."""
        self.requests.append(request)
        transport = request.channel._transport  # the server's own transport: what the writer leaves buffered
        assert transport is not None
        response = ResponseStream(request, 200, "application/octet-stream")
        piece = b"x" * CHUNK
        for _ in range(FLOOD // CHUNK):
            await response.write(piece)
            self.flood_written += len(piece)
            self.flood_max_buffer = max(self.flood_max_buffer, transport.get_write_buffer_size())
        await response.end()
        return response


@dataclass
class Served:
    app: App
    server: Http1Server

    async def connect(self, *, rcvbuf: int = 0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.server.port))
        return await asyncio.open_connection(sock=sock)


@asynccontextmanager
async def served(keepalive_s: float = 75.0) -> AsyncIterator[Served]:
    app = App()
    dispatch = Dispatcher(app.routes())
    server = Http1Server(
        dispatch, "127.0.0.1", 0, error_page=dispatch.error_page, max_body_bytes=LIMIT, keepalive_s=keepalive_s
    )
    await server.start()
    try:
        yield Served(app, server)
    finally:
        app.gate.set()
        await server.stop(grace_s=1.0)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def envelope(self) -> dict[str, Any]:
        parsed = orjson.loads(self.body)
        assert set(parsed) == {"error"}
        assert set(parsed["error"]) == {"message", "type", "param", "code"}
        return dict(parsed["error"])


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    line, *fields = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields if f)}
    return int(line.split()[1]), headers


async def read_answer(reader: asyncio.StreamReader, *, head_only: bool = False) -> Answer:
    """One response: Content-Length, chunked, or delimited by the close."""
    status, headers = await read_head(reader)
    if head_only:
        return Answer(status, headers, b"")
    if "content-length" in headers:
        return Answer(status, headers, await reader.readexactly(int(headers["content-length"])))
    if headers.get("transfer-encoding") != "chunked":
        return Answer(status, headers, await reader.read())
    pieces = []
    while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
        pieces.append((await reader.readexactly(size + 2))[:-2])
    assert await reader.readexactly(2) == b"\r\n"
    return Answer(status, headers, b"".join(pieces))


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (nothing more arrives)."""
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in (f"POST {path} HTTP/1.1", "Host: t", *extra))
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def get(path: str, *extra: str, version: str = "1.1") -> bytes:
    return "".join(f"{line}\r\n" for line in (f"GET {path} HTTP/{version}", "Host: t", *extra, "")).encode()


def test_keep_alive_connection_serves_several_requests(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            for text in (b"first", b"second", b"third"):
                writer.write(post("/echo", text, "x-request-id: mine-1"))
                answer = await read_answer(reader)
                assert (answer.status, answer.body) == (200, text)
                assert answer.headers["x-request-id"] == "mine-1"
                assert "connection" not in answer.headers
            assert len(s.server.connections) == 1
            writer.close()

    run(scenario)


def test_pipelined_requests_are_answered_in_order(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            writer.write(get("/hold") + post("/echo", b"second") + post("/echo", b"third"))
            await poll_until(lambda: _true(s.app.started == ["/hold"]), timeout=10, what="the first request held")
            s.app.gate.set()
            answers = [await read_answer(reader) for _ in range(3)]
            assert [a.body for a in answers] == [b"held", b"second", b"third"]
            assert s.app.finished == ["/hold", "/echo", "/echo"]
            writer.close()

    run(scenario)


def test_a_chunked_request_body_is_read_whole(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(0)  # the pieces arrive apart (no timing depends on it)
            writer.write(b"1\r\n \r\n5\r\nworld\r\n0\r\n\r\n")
            answer = await read_answer(reader)
            assert (answer.status, answer.body) == (200, b"hello world")
            writer.write(post("/echo", b"again"))  # the connection is still in step
            assert (await read_answer(reader)).body == b"again"
            writer.close()

    run(scenario)


def test_expect_100_continue_is_answered_before_the_body_is_sent(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"body")
            answer = await read_answer(reader)
            assert (answer.status, answer.body) == (200, b"body")
            writer.close()

    run(scenario)


@pytest.mark.parametrize("framing", ["declared", "chunked"])
def test_a_body_over_the_limit_is_413_and_the_connection_closes(run: Run, framing: str) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            if framing == "declared":  # the client waits for 100 Continue, which never comes
                head = f"Expect: 100-continue\r\nContent-Length: {LIMIT + 1}\r\n\r\n"
                writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\n" + head.encode())
            else:
                writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(4):
                    writer.write(b"%x\r\n%b\r\n" % (LIMIT, b"y" * LIMIT))
            answer = await read_answer(reader)
            assert answer.status == 413
            assert answer.envelope()["code"] == "request_too_large"
            assert answer.headers["x-request-id"].startswith("req-")
            assert answer.headers["connection"] == "close"
            assert await closed(reader)
            assert s.app.finished == []

    run(scenario)


@pytest.mark.parametrize(
    "raw",
    [b"GARBAGE\r\n\r\n", b"POST /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"],
)
def test_malformed_http_is_a_400_envelope_and_the_connection_closes(run: Run, raw: bytes) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            writer.write(raw)
            answer = await read_answer(reader)
            assert answer.status == 400
            assert answer.envelope()["type"] == "invalid_request_error"
            assert answer.headers["x-request-id"].startswith("req-")
            assert await closed(reader)

    run(scenario)


@pytest.mark.parametrize("shape", ["many headers", "one endless header"])
def test_a_head_over_64_kib_is_431_and_the_connection_closes(run: Run, shape: str) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            if shape == "many headers":
                writer.write(get("/hold", *(f"x-filler-{i}: {'v' * 100}" for i in range(700))))
            else:  # never ends: the server must stop buffering it
                writer.write(b"GET /hold HTTP/1.1\r\nx-filler: ")
                for _ in range(40):
                    writer.write(b"v" * 4096)
                    await writer.drain()
            answer = await read_answer(reader)
            assert answer.status == 431
            assert answer.envelope()["code"] == "request_header_fields_too_large"
            assert await closed(reader)
            assert s.app.started == []

    run(scenario)


def test_unknown_paths_and_wrong_methods_get_envelopes(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            writer.write(get("/nowhere", "x-request-id: bad id with spaces"))
            missing = await read_answer(reader)
            assert missing.status == 404
            assert missing.envelope()["code"] == "not_found"
            assert missing.headers["x-request-id"].startswith("req-")  # the client's was not a sane token
            writer.write(get("/echo"))
            wrong = await read_answer(reader)
            assert wrong.status == 405
            assert wrong.envelope()["code"] == "method_not_allowed"
            assert wrong.headers["allow"] == "POST"
            writer.write(post("/hold", b"{}"))
            assert (await read_answer(reader)).headers["allow"] == "GET, HEAD"
            s.app.gate.set()
            writer.write(b"HEAD /hold HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await read_answer(reader, head_only=True)
            assert (head.status, head.headers["content-length"]) == (200, "4")
            writer.write(post("/echo", b"after"))  # no body was sent for HEAD: still in step
            assert (await read_answer(reader)).body == b"after"
            writer.close()

    run(scenario)


def test_http_1_0_closes_unless_keep_alive_is_asked(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            s.app.gate.set()
            reader, writer = await s.connect()
            writer.write(get("/hold", version="1.0"))
            answer = await read_answer(reader)
            assert (answer.status, answer.body, answer.headers["connection"]) == (200, b"held", "close")
            assert await closed(reader)

            reader, writer = await s.connect()
            writer.write(get("/hold", "Connection: keep-alive", version="1.0"))
            answer = await read_answer(reader)
            assert (answer.body, answer.headers["connection"]) == (b"held", "keep-alive")
            writer.write(get("/stream", "Connection: keep-alive", version="1.0"))
            stream = await read_answer(reader)  # no chunked encoding for HTTP/1.0: delimited by the close
            assert "transfer-encoding" not in stream.headers
            assert stream.body == b"onetwo"

    run(scenario)


def test_a_stream_arrives_piece_by_piece_before_the_handler_finishes(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            writer.write(get("/stream"))
            status, headers = await read_head(reader)
            assert (status, headers["transfer-encoding"], headers["x-request-id"]) == (200, "chunked", "r-1")
            assert await reader.readuntil(b"one\r\n") == b"3\r\none\r\n"
            assert s.app.finished == []  # the handler is still waiting for the gate
            s.app.gate.set()
            assert await reader.readexactly(13) == b"3\r\ntwo\r\n0\r\n\r\n"
            writer.write(post("/echo", b"next"))  # the stream ended cleanly: keep-alive goes on
            assert (await read_answer(reader)).body == b"next"
            writer.close()

    run(scenario)


def test_a_stream_can_end_with_its_last_piece(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            writer.write(get("/finale"))
            await read_head(reader)
            assert await reader.readexactly(22) == b"3\r\none\r\n4\r\nlast\r\n0\r\n\r\n"
            writer.write(get("/finale", "Connection: keep-alive", version="1.0"))
            assert (await read_answer(reader)).body == b"onelast"  # HTTP/1.0: no chunks, delimited by the close

    run(scenario)


def test_a_failure_after_a_stream_began_aborts_the_connection(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect()
            writer.write(get("/broken"))
            status, _ = await read_head(reader)
            assert status == 200
            assert await reader.readuntil(b"one\r\n") == b"3\r\none\r\n"
            try:
                rest = await asyncio.wait_for(reader.read(), 10)
            except ConnectionResetError:
                rest = b""
            assert rest == b""  # neither a last chunk (the stream is not complete) nor a second response

    run(scenario)


def test_a_client_that_does_not_read_makes_the_writer_wait(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect(rcvbuf=16 * 1024)
            writer.write(get("/flood"))
            await poll_until(lambda: _true(bool(s.app.requests)), timeout=10, what="the flood started")
            transport = s.app.requests[0].channel._transport
            assert transport is not None
            high = transport.get_write_buffer_limits()[1]
            await poll_until(
                lambda: _true(transport.get_write_buffer_size() >= high), timeout=10, what="the writer paused"
            )
            written = s.app.flood_written
            for _ in range(100):
                await asyncio.sleep(0)
            assert s.app.flood_written == written < FLOOD  # waiting, not writing on
            answer = await read_answer(reader)  # now read it all
            assert len(answer.body) == FLOOD
            assert s.app.flood_max_buffer <= high + CHUNK + 64  # never more than one piece over the mark
            writer.close()

    run(scenario)


def test_pipelined_requests_wait_while_a_slow_reader_holds_a_response(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            reader, writer = await s.connect(rcvbuf=16 * 1024)
            writer.write(get("/big") * 8)
            await poll_until(lambda: _true(bool(s.app.requests)), timeout=10, what="the first request served")
            transport = s.app.requests[0].channel._transport
            high = transport.get_write_buffer_limits()[1]
            await poll_until(
                lambda: _true(transport.get_write_buffer_size() >= high), timeout=10, what="the writer paused"
            )
            for _ in range(100):
                await asyncio.sleep(0)
            assert len(s.app.requests) == 1  # the next request waits for the client to read this response
            answers = [await read_answer(reader) for _ in range(8)]
            assert [len(a.body) for a in answers] == [FLOOD // 4] * 8
            writer.close()

    run(scenario)


def test_a_client_that_goes_away_cancels_its_request(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            _, writer = await s.connect()
            writer.write(get("/hold"))
            await poll_until(lambda: _true(s.app.started == ["/hold"]), timeout=10, what="the request held")
            writer.close()
            await poll_until(lambda: _true(s.app.cancelled == 1), timeout=10, what="the handler cancelled")
            await poll_until(lambda: _true(not s.server.connections), timeout=10, what="the connection forgotten")

    run(scenario)


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(run: Run) -> None:
    async def scenario() -> None:
        async with served(keepalive_s=0.2) as s:
            reader, writer = await s.connect()
            writer.write(post("/echo", b"once"))
            assert (await read_answer(reader)).body == b"once"
            assert await closed(reader)
            reader, writer = await s.connect()
            writer.write(b"GET /hold HTTP/1.1\r\n")  # a head that never completes
            assert await closed(reader)

    run(scenario)


def test_stop_finishes_requests_in_flight_and_closes_idle_connections(run: Run) -> None:
    async def scenario() -> None:
        async with served() as s:
            idle_reader, idle_writer = await s.connect()
            idle_writer.write(post("/echo", b"done"))
            assert (await read_answer(idle_reader)).body == b"done"
            busy_reader, busy_writer = await s.connect()
            busy_writer.write(get("/hold"))
            await poll_until(lambda: _true(s.app.started == ["/echo", "/hold"]), timeout=10, what="request held")

            stopping = asyncio.create_task(s.server.stop(grace_s=20))
            assert await closed(idle_reader)
            with pytest.raises(ConnectionRefusedError):
                await s.connect()
            assert not stopping.done()
            s.app.gate.set()
            answer = await read_answer(busy_reader)
            assert (answer.status, answer.body, answer.headers["connection"]) == (200, b"held", "close")
            assert await closed(busy_reader)
            await asyncio.wait_for(stopping, 10)
            assert s.app.cancelled == 0

    run(scenario)


async def _true(value: bool) -> bool:
    return value
