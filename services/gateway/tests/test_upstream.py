"""The upstream HTTP/1.1 client against a real local server, on the default loop and on uvloop.

The engine here is a raw asyncio server whose handler a test writes, so framing, silence
and closes happen exactly when the test says; it counts connections and requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from strata_gateway.adapters import http1
from strata_gateway.adapters.upstream import (
    UpstreamClient,
    UpstreamDisconnected,
    UpstreamFailure,
    UpstreamPool,
    classify,
    new_session,
)
from strata_testing import free_port, poll_until

Scenario = Callable[[], Coroutine[Any, Any, None]]
Run = Callable[[Scenario], None]
JSON = b'{"id":"cmpl-1","object":"text_completion","choices":[{"text":"hello"}]}'


@dataclass
class Exchange:
    """One request as the engine read it; `conn` and `nth` count from 1."""

    line: str
    headers: dict[str, str]
    body: bytes
    conn: int
    nth: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


Handler = Callable[[Exchange], Awaitable[bool]]  # True: keep reading requests on this connection


class Engine:
    """A raw HTTP/1.1 server: parses requests, lets `handler` answer, counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.disconnects = 0  # connections the client closed while the handler waited for it
        self.exchanges: list[Exchange] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Engine:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn, nth = self.connections, 0
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *fields = head.split("\r\n")
                headers = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields if f)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                nth += 1
                exchange = Exchange(line, headers, body, conn, nth, reader, writer)
                self.exchanges.append(exchange)
                if not await self.handler(exchange):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        except asyncio.CancelledError:
            pass  # the test is over (a cancelled handler would make asyncio's stream server log an error)
        finally:
            self.open -= 1
            self._tasks.discard(task)
            writer.transport.abort()


def reply(status: int = 200, body: bytes = JSON, *, headers: str = "Content-Type: application/json\r\n") -> bytes:
    """A complete response with Content-Length."""
    return f"HTTP/1.1 {status} Status\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (b"" is the last one)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


async def answer_ok(exchange: Exchange) -> bool:
    exchange.writer.write(reply())
    return True


async def wait_for_eof(engine: Engine, exchange: Exchange) -> bool:
    """Read until the client closes the connection (counted in `engine.disconnects`)."""
    while await exchange.reader.read(65536):
        pass
    engine.disconnects += 1
    return False


@asynccontextmanager
async def client(
    *, connect_timeout_s: float = 2.0, idle_timeout_s: float = 5.0, max_connections: int = 0
) -> AsyncIterator[tuple[UpstreamClient, UpstreamPool]]:
    pool = new_session(connect_timeout_s, idle_timeout_s, max_connections)
    try:
        yield UpstreamClient(pool), pool
    finally:
        await pool.close()


def deadline(seconds: float = 10.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def until(check: Callable[[], bool], what: str) -> None:
    async def holds() -> bool:
        return check()

    await poll_until(holds, timeout=5, what=what)


async def post_and_read(api: UpstreamClient, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await api.post("e1", url, body, {"Content-Type": "application/json"}, deadline())
    return response.status, await api.read("e1", response, deadline())


async def failure_of(call: Awaitable[object]) -> UpstreamFailure:
    with pytest.raises(UpstreamFailure) as caught:
        await call
    return caught.value


# -- keep-alive and framing ---------------------------------------------------------------


def test_sequential_requests_reuse_one_connection(run: Run) -> None:
    async def scenario() -> None:
        async with Engine(answer_ok) as engine, client() as (api, _):
            for i in range(5):
                assert await post_and_read(api, f"{engine.url}/v1/completions", b'{"n":%d}' % i) == (200, JSON)
            assert engine.connections == 1
            assert [e.nth for e in engine.exchanges] == [1, 2, 3, 4, 5]

    run(scenario)


def test_the_request_carries_the_line_host_length_and_headers(run: Run) -> None:
    async def scenario() -> None:
        async with Engine(answer_ok) as engine, client() as (api, _):
            port = engine.url.rsplit(":", 1)[1]
            response = await api.post(
                "e1", f"{engine.url}/v1/chat/completions?x=1", b'{"a":1}', {"X-Request-Id": "r-1"}, deadline()
            )
            response.release()
            (exchange,) = engine.exchanges
            assert exchange.line == "POST /v1/chat/completions?x=1 HTTP/1.1"
            assert exchange.headers == {"host": f"127.0.0.1:{port}", "content-length": "7", "x-request-id": "r-1"}
            assert exchange.body == b'{"a":1}'
            with pytest.raises(ValueError, match="CR or LF"):
                await api.post("e1", f"{engine.url}/v1", b"{}", {"X-Evil": "a\r\nX-Injected: 1"}, deadline())

    run(scenario)


def test_a_content_length_body_sent_in_pieces_is_read_whole(run: Run) -> None:
    body = bytes(range(256)) * 1200  # ~300 kB

    async def pieces(exchange: Exchange) -> bool:
        head = f"HTTP/1.1 200 OK\r\ncontent-TYPE: Application/JSON; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        exchange.writer.write(head.encode() + b"\r\n")
        for start in range(0, len(body), 50_000):
            await exchange.writer.drain()
            await asyncio.sleep(0.001)
            exchange.writer.write(body[start : start + 50_000])
        return True

    async def scenario() -> None:
        async with Engine(pieces) as engine, client() as (api, _):
            response = await api.post("e1", f"{engine.url}/v1/completions", b"{}", {}, deadline())
            assert response.headers.get("Content-Type", "") == "Application/JSON; charset=utf-8"
            assert response.content_type == "application/json"
            assert await api.read("e1", response, deadline()) == body
            assert await post_and_read(api, f"{engine.url}/v1/completions") == (200, body)
            assert engine.connections == 1

    run(scenario)


def test_a_chunked_stream_is_relayed_chunk_by_chunk(run: Run) -> None:
    events = [b"data: %d\n\n" % i for i in range(5)] + [b"data: [DONE]\n\n"]
    taken = asyncio.Queue[bytes]()  # the client's pieces, as it got them

    async def stream(exchange: Exchange) -> bool:
        if exchange.nth > 1:
            return await answer_ok(exchange)
        exchange.writer.write(CHUNKED_HEAD)
        for event in events:
            exchange.writer.write(chunk(event))
            assert await taken.get() == event  # the next one only once the client has this one
        exchange.writer.write(chunk(b""))
        return True

    async def scenario() -> None:
        async with Engine(stream) as engine, client() as (api, _):
            response = await api.post("e1", f"{engine.url}/v1/chat/completions", b"{}", {}, deadline())
            assert (response.status, response.content_type) == (200, "text/event-stream")
            async for data in response.iter_chunks():
                taken.put_nowait(data)
            response.release()
            assert await post_and_read(api, f"{engine.url}/v1/chat/completions") == (200, JSON)
            assert engine.connections == 1

    run(scenario)


@pytest.mark.parametrize(
    "head",
    [
        "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n",  # body framed by the close
        f"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {len(JSON)}\r\n\r\n",
    ],
    ids=["read_until_close", "connection_close"],
)
def test_a_response_that_ends_the_connection_is_not_reused(run: Run, head: str) -> None:
    async def close_after(exchange: Exchange) -> bool:
        exchange.writer.write(head.encode() + JSON)
        return head.startswith("HTTP/1.1")  # after Connection: close it would go on (the client must not)

    async def scenario() -> None:
        async with Engine(close_after) as engine, client() as (api, _):
            for _ in range(2):
                assert await post_and_read(api, f"{engine.url}/v1/completions") == (200, JSON)
            assert engine.connections == 2

    run(scenario)


# -- failures -----------------------------------------------------------------------------


def test_a_5xx_is_read_released_and_raised_as_status_5xx(run: Run) -> None:
    async def fail_first(exchange: Exchange) -> bool:
        exchange.writer.write(reply(503, b'{"error":"overloaded"}') if exchange.nth == 1 else reply())
        return True

    async def scenario() -> None:
        async with Engine(fail_first) as engine, client() as (api, _):
            failure = await failure_of(api.post("e1", f"{engine.url}/v1/completions", b"{}", {}, deadline()))
            assert (failure.kind, failure.engine_id) == ("status_5xx", "e1")
            assert failure.detail == 'HTTP 503: {"error":"overloaded"}'
            assert await post_and_read(api, f"{engine.url}/v1/completions") == (200, JSON)
            assert engine.connections == 1  # the 5xx's connection went back to the pool

    run(scenario)


@pytest.mark.parametrize("url", ["refused", "https://127.0.0.1:1/v1"])
def test_no_connection_is_a_connect_failure(run: Run, url: str) -> None:
    async def scenario() -> None:
        target = f"http://127.0.0.1:{free_port()}/v1" if url == "refused" else url
        async with client() as (api, _):
            failure = await failure_of(api.post("e1", target, b"{}", {}, deadline()))
            assert failure.kind == "connect"
            assert failure.retryable

    run(scenario)


@pytest.mark.parametrize("silent", ["before_the_head", "mid_body"])
def test_a_silent_engine_times_out_after_the_idle_timeout(run: Run, silent: str) -> None:
    async def go_silent(exchange: Exchange) -> bool:
        if silent == "mid_body":
            exchange.writer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        await asyncio.sleep(3600)
        return False

    async def scenario() -> None:
        async with Engine(go_silent) as engine, client(idle_timeout_s=0.2) as (api, _):
            started = time.monotonic()
            if silent == "before_the_head":
                failure = await failure_of(api.post("e1", f"{engine.url}/v1", b"{}", {}, deadline()))
            else:
                response = await api.post("e1", f"{engine.url}/v1", b"{}", {}, deadline())
                with pytest.raises(TimeoutError) as caught:
                    _ = [data async for data in response.iter_chunks()]
                response.close()
                failure = classify(caught.value, "e1")
            assert failure.kind == "timeout"
            assert not failure.retryable
            assert time.monotonic() - started < 5

    run(scenario)


def test_a_slow_but_steady_stream_is_not_an_idle_timeout(run: Run) -> None:
    async def trickle(exchange: Exchange) -> bool:
        exchange.writer.write(CHUNKED_HEAD)
        for _ in range(8):  # 0.8 s in all, never 0.4 s silent
            await asyncio.sleep(0.1)
            exchange.writer.write(chunk(b"x"))
        exchange.writer.write(chunk(b""))
        return True

    async def scenario() -> None:
        async with Engine(trickle) as engine, client(idle_timeout_s=0.4) as (api, _):
            response = await api.post("e1", f"{engine.url}/v1", b"{}", {}, deadline())
            assert await api.read("e1", response, deadline()) == b"x" * 8

    run(scenario)


def test_the_deadline_bounds_the_whole_exchange(run: Run) -> None:
    async def hang(exchange: Exchange) -> bool:
        await asyncio.sleep(3600)
        return False

    async def scenario() -> None:
        async with Engine(hang) as engine, client(idle_timeout_s=60) as (api, _):
            started = time.monotonic()
            failure = await failure_of(api.post("e1", f"{engine.url}/v1", b"{}", {}, deadline(0.2)))
            assert failure.kind == "timeout"
            assert time.monotonic() - started < 5

    run(scenario)


@pytest.mark.parametrize("framing", ["content_length", "chunked"])
def test_an_engine_closing_mid_body_is_a_disconnect(run: Run, framing: str) -> None:
    async def cut(exchange: Exchange) -> bool:
        if framing == "chunked":
            exchange.writer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        else:
            exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await exchange.writer.drain()
        return False  # the engine closes the connection

    async def scenario() -> None:
        async with Engine(cut) as engine, client() as (api, _):
            response = await api.post("e1", f"{engine.url}/v1", b"{}", {}, deadline())
            if framing == "chunked":
                chunks = response.iter_chunks()
                pieces = [await anext(chunks)]
                with pytest.raises(UpstreamDisconnected) as caught:
                    await anext(chunks)
                response.close()
                assert pieces == [b"data: 1\n\n"]
                assert classify(caught.value, "e1").kind == "disconnect"
            else:
                failure = await failure_of(api.read("e1", response, deadline()))
                assert failure.kind == "disconnect"

    run(scenario)


def test_a_malformed_response_is_a_disconnect(run: Run) -> None:
    async def garbage(exchange: Exchange) -> bool:
        exchange.writer.write(b"SPDY/9 what\r\n\r\n")
        return True

    async def scenario() -> None:
        async with Engine(garbage) as engine, client() as (api, _):
            failure = await failure_of(api.post("e1", f"{engine.url}/v1", b"{}", {}, deadline()))
            assert failure.kind == "disconnect"
            await until(lambda: engine.open == 0, "the broken connection closed")

    run(scenario)


# -- the pool -----------------------------------------------------------------------------


def test_a_pooled_connection_the_engine_closed_as_it_was_reused_is_retried_on_a_fresh_one(run: Run) -> None:
    async def close_the_second(exchange: Exchange) -> bool:
        if exchange.nth == 2:  # as if the engine's keep-alive timeout hit as the request came
            return False
        exchange.writer.write(reply())
        return True

    async def scenario() -> None:
        async with Engine(close_the_second) as engine, client() as (api, _):
            assert await post_and_read(api, f"{engine.url}/v1") == (200, JSON)
            assert await post_and_read(api, f"{engine.url}/v1") == (200, JSON)
            assert [(e.conn, e.nth) for e in engine.exchanges] == [(1, 1), (1, 2), (2, 1)]

    run(scenario)


def test_the_retry_is_once_and_only_for_a_reused_connection(run: Run) -> None:
    async def only_the_first(exchange: Exchange) -> bool:
        if exchange.conn == 1 and exchange.nth == 1:
            exchange.writer.write(reply())
            return True
        return False  # close without an answer

    async def scenario() -> None:
        async with Engine(only_the_first) as engine, client() as (api, _):
            assert await post_and_read(api, f"{engine.url}/v1") == (200, JSON)
            failure = await failure_of(post_and_read(api, f"{engine.url}/v1"))  # reused, then fresh: both closed
            assert failure.kind == "disconnect"
            assert [(e.conn, e.nth) for e in engine.exchanges] == [(1, 1), (1, 2), (2, 1)]
            failure = await failure_of(post_and_read(api, f"{engine.url}/v1"))  # fresh: not retried
            assert failure.kind == "disconnect"
            assert len(engine.exchanges) == 4

    run(scenario)


def test_an_idle_connection_the_engine_closed_is_not_used_again(run: Run) -> None:
    async def answer_and_close_soon(exchange: Exchange) -> bool:
        exchange.writer.write(reply())
        await exchange.writer.drain()
        return False

    async def scenario() -> None:
        async with Engine(answer_and_close_soon) as engine, client() as (api, _):
            assert await post_and_read(api, f"{engine.url}/v1") == (200, JSON)
            await until(lambda: engine.open == 0, "the engine closed the idle connection")
            await asyncio.sleep(0.05)  # the client sees the close
            assert await post_and_read(api, f"{engine.url}/v1") == (200, JSON)
            assert [(e.conn, e.nth) for e in engine.exchanges] == [(1, 1), (2, 1)]  # no failed attempt

    run(scenario)


def test_idle_connections_are_closed_after_the_keepalive(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "KEEPALIVE_S", 0.2)

    async def scenario() -> None:
        async with Engine(answer_ok) as engine, client() as (api, _):
            await asyncio.gather(*(post_and_read(api, f"{engine.url}/v1") for _ in range(3)))
            assert engine.connections == 3
            await until(lambda: engine.open == 0, "idle connections closed")

    run(scenario)


def test_the_pool_bound_holds_and_waiting_counts_against_the_deadline(run: Run) -> None:
    gate = asyncio.Event()

    async def held(exchange: Exchange) -> bool:
        await gate.wait()
        exchange.writer.write(reply())
        return True

    async def scenario() -> None:
        async with Engine(held) as engine, client(max_connections=2) as (api, _):
            posts = [asyncio.create_task(post_and_read(api, f"{engine.url}/v1")) for _ in range(5)]
            await until(lambda: len(engine.exchanges) == 2, "two requests at the engine")
            failure = await failure_of(api.post("e1", f"{engine.url}/v1", b"{}", {}, deadline(0.2)))
            assert failure.kind == "timeout"  # no slot came free before the deadline
            assert (engine.connections, len(engine.exchanges)) == (2, 2)
            gate.set()
            assert await asyncio.gather(*posts) == [(200, JSON)] * 5
            assert (engine.connections, len(engine.exchanges)) == (2, 5)

    run(scenario)


def test_closing_a_response_mid_stream_disconnects_the_engine(run: Run) -> None:
    async def stream_then_wait(exchange: Exchange) -> bool:
        exchange.writer.write(CHUNKED_HEAD + chunk(b"data: 1\n\n"))
        return await wait_for_eof(engine, exchange)

    engine = Engine(stream_then_wait)

    async def scenario() -> None:
        async with engine, client(idle_timeout_s=60) as (api, _):
            response = await api.post("e1", f"{engine.url}/v1", b"{}", {}, deadline())
            assert await anext(response.iter_chunks()) == b"data: 1\n\n"
            response.close()
            await until(lambda: engine.disconnects == 1, "the engine saw the disconnect")

    run(scenario)


def test_closing_the_pool_closes_idle_and_busy_connections(run: Run) -> None:
    async def first_answers(exchange: Exchange) -> bool:
        if exchange.nth == 1:
            return await answer_ok(exchange)
        return await wait_for_eof(engine, exchange)

    engine = Engine(first_answers)

    async def scenario() -> None:
        async with engine, client() as (api, pool):
            both = await asyncio.gather(*(post_and_read(api, f"{engine.url}/v1") for _ in range(2)))
            assert both == [(200, JSON)] * 2  # two idle connections now
            busy = asyncio.create_task(post_and_read(api, f"{engine.url}/v1"))
            await until(lambda: len(engine.exchanges) == 3, "a request waiting")
            await pool.close()
            assert (await failure_of(busy)).kind == "disconnect"
            await until(lambda: engine.open == 0, "every connection closed")
            assert engine.connections == 2

    run(scenario)


def test_reading_pauses_while_the_consumer_lags_and_resumes_as_it_drains(run: Run) -> None:
    total, piece = 64 << 20, 64 << 10
    progress = {"sent": 0, "at": 0.0}

    async def flood(exchange: Exchange) -> bool:
        exchange.writer.write(CHUNKED_HEAD)
        data = chunk(b"x" * piece)
        for _ in range(total // piece):
            exchange.writer.write(data)
            await exchange.writer.drain()
            progress["sent"] += piece
            progress["at"] = time.monotonic()
        exchange.writer.write(chunk(b""))
        return True

    async def scenario() -> None:
        async with Engine(flood) as engine, client(idle_timeout_s=0.3) as (api, _):
            response = await api.post("e1", f"{engine.url}/v1", b"{}", {}, deadline())
            # the client takes nothing: the engine must get stuck well before the end
            await until(lambda: time.monotonic() - progress["at"] > 0.5, "the engine blocked")
            assert progress["sent"] < total // 2
            received = 0
            async for data in response.iter_chunks():  # and no idle timeout either: the pause was ours
                received += len(data)
            response.release()
            assert (received, progress["sent"]) == (total, total)

    run(scenario)
