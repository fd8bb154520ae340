"""The floor of a Python data plane: the least any Python HTTP relay does per request.

A measurement reference for `overhead.py`, not product code. It does only what every
gateway must: read the request (Content-Length), parse its JSON, send it over a pooled
keep-alive connection to one engine, read the response (Content-Length) and hand it
back. No auth, limits, routing, usage records, metrics or tracing; uvloop; raw asyncio
protocols. JSON responses only (no SSE). Whatever it reaches on a machine bounds what a
Python gateway can reach there.

    client ──▶ RelayServer (one per connection) ──▶ pool of UpstreamConnection ──▶ engine

Run: `python bare_relay.py LISTEN_PORT ENGINE_PORT` (until killed).
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop

_HEAD_END = b"\r\n\r\n"


def _split_message(buffer: bytearray) -> tuple[bytes, bytes] | None:
    """(head, body) of the first complete Content-Length message in `buffer` (consumed), or None."""
    end = buffer.find(_HEAD_END)
    if end < 0:
        return None
    head = bytes(buffer[:end]) + b"\r\n"
    at = head.lower().find(b"content-length:")
    length = int(head[at + 15 : head.index(b"\r\n", at)]) if at >= 0 else 0
    total = end + 4 + length
    if len(buffer) < total:
        return None
    body = bytes(buffer[end + 4 : total])
    del buffer[:total]
    return head, body


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to the engine; one request at a time."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[bytes, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        message = _split_message(self.buffer)
        if message is not None and self.waiter is not None:
            waiter, self.waiter = self.waiter, None
            waiter.set_result(message)


class Relay:
    """The pool of engine connections."""

    def __init__(self, engine_port: int) -> None:
        self.engine_port = engine_port
        self.idle: list[UpstreamConnection] = []

    async def forward(self, body: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        if self.idle:
            conn = self.idle.pop()
        else:
            _, conn = await loop.create_connection(UpstreamConnection, "127.0.0.1", self.engine_port)
        conn.waiter = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: engine\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        _, reply = await conn.waiter
        self.idle.append(conn)
        return reply


class RelayServer(asyncio.Protocol):
    """One client connection."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (message := _split_message(self.buffer)) is not None:
            task = asyncio.ensure_future(self.handle(message[1]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def handle(self, body: bytes) -> None:
        orjson.loads(body)  # every gateway must look inside (model, stream)
        reply = await self.relay.forward(body)
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(reply), reply)
        )


async def serve(port: int, engine_port: int) -> None:
    """Relay 127.0.0.1:`port` to the engine on `engine_port` until cancelled."""
    relay = Relay(engine_port)
    server = await asyncio.get_running_loop().create_server(lambda: RelayServer(relay), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
