"""Relaying an engine's response to the client.

Streams are relayed event by event: each complete SSE event is written to the client
as soon as it arrived (never held for the next one; the events completed by one read
from the engine go out in one write), except the usage-only chunk the client did not
ask for. The client's 200 head is sent with the first relayed event, so a failure
before it is still a clean HTTP error (or a retry on another engine):

    upstream fails before the first event  ──▶ UpstreamFailure (caller retries or answers 502/504)
    upstream fails after it               ──▶ vLLM-style error event, then data: [DONE]
    upstream ends without data: [DONE]    ──▶ the same (a truncated stream is an error)
    client write fails                    ──▶ ClientGone (status 499; the upstream is closed)

The piece holding ``data: [DONE]`` goes out with the end of the client's stream in one
write; anything the engine sends after it is dropped, and an engine failing after it
costs the client nothing. Each write is handed to the socket at once and waits while a
slow client's transport buffer is full, so reading from the engine slows down with it.
"""

from __future__ import annotations

import asyncio

from strata_gateway.adapters.http_messages import Request, Response, ResponseStream
from strata_gateway.adapters.upstream import UpstreamFailure, UpstreamResponse, classify
from strata_gateway.domain.errors import stream_error_event
from strata_gateway.domain.exchange import Exchange
from strata_gateway.domain.sse import DONE, SseFramer, StreamTap, usage_of_body
from strata_gateway.telemetry import UPSTREAM_ERRORS

__all__ = ["ClientGone", "relay_body", "relay_stream"]

_SSE_TYPE = "text/event-stream; charset=utf-8"


class ClientGone(Exception):
    """The client connection closed while the response was being written.

    Attributes:
        response: the client response as far as it got (return it to the server as is).
    """

    def __init__(self, response: ResponseStream, detail: str) -> None:
        super().__init__(f"client gone: {detail}")
        self.response = response


def relay_body(exchange: Exchange, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> Response:
    """A complete (non-streamed) engine response, body untouched; usage taken from it."""
    exchange.mark_first_byte()
    exchange.status = status
    if status < 400:
        exchange.usage = usage_of_body(body)
    return Response(status, body, content_type or "application/json", headers)


async def relay_stream(
    request: Request,
    exchange: Exchange,
    engine_id: str,
    upstream: UpstreamResponse,
    *,
    headers: dict[str, str],
    deadline: float,
) -> ResponseStream:
    """Relay an engine's SSE stream to the client (see the module docstring).

    Args:
        request: the client's request.
        exchange: the request's state (status, usage, first byte, error are set here).
        engine_id: for errors and metrics.
        upstream: the engine's response (its head arrived with status 200).
        headers: response headers for the client.
        deadline: event-loop time when the whole request must be over.

    Raises:
        UpstreamFailure: the engine failed before anything reached the client.
        ClientGone: the client went away.
    """
    assert exchange.request is not None
    framer = SseFramer()
    tap = StreamTap(exchange.request.client_usage)
    client: ResponseStream | None = None
    complete = False
    try:
        try:
            async with asyncio.timeout_at(deadline):
                async for data in upstream.iter_chunks():
                    events = [event for event in framer.feed(data) if tap.inspect(event)]
                    if not events:
                        continue
                    if client is None:
                        exchange.mark_first_byte()
                        client = _open(request, headers)
                    await _relay(client, events[0] if len(events) == 1 else b"".join(events), last=tap.done)
        except OSError as exc:  # the engine dropped the stream (UpstreamDisconnected) or timed out
            failure = classify(exc, engine_id)
            if client is None:
                raise failure from exc
            return await _end_with_error(client, exchange, failure)
        if not tap.done:
            failure = UpstreamFailure("disconnect", engine_id, "the stream ended without data: [DONE]")
            if client is None:
                raise failure
            return await _end_with_error(client, exchange, failure)
        complete = True
    finally:
        exchange.usage = tap.usage
        if complete:
            upstream.release()
        else:
            upstream.close()  # drop the connection: the engine aborts the request
    if tap.error is not None:
        exchange.error = "engine_stream_error"
        UPSTREAM_ERRORS.labels(engine_id, "stream_error").inc()
    assert client is not None  # [DONE] was relayed, so the stream was opened
    await _finish(client)
    return client


def _open(request: Request, headers: dict[str, str]) -> ResponseStream:
    """The client's 200 stream (its head goes out with the first write)."""
    headers["cache-control"] = "no-cache"
    return ResponseStream(request, 200, _SSE_TYPE, headers)


async def _write(client: ResponseStream, data: bytes) -> None:
    try:
        await client.write(data)
    except ConnectionError as exc:  # ClientDisconnected
        raise ClientGone(client, repr(exc)) from exc


async def _relay(client: ResponseStream, data: bytes, *, last: bool) -> None:
    """One piece of the stream; the `last` one (it holds [DONE]) also ends it. After that, nothing."""
    if client.ended:
        return
    if last:
        await _finish(client, data)
    else:
        await _write(client, data)


async def _finish(client: ResponseStream, data: bytes = b"") -> None:
    """End the client's stream (with `data` in the same write), unless it already ended."""
    if client.ended:
        return
    try:
        await client.end(data)
    except ConnectionError as exc:
        raise ClientGone(client, repr(exc)) from exc


async def _end_with_error(client: ResponseStream, exchange: Exchange, failure: UpstreamFailure) -> ResponseStream:
    """Close a started stream after an engine failure: error event, then data: [DONE]."""
    if client.ended:  # the failure came after [DONE]: the client has its whole stream
        return client
    UPSTREAM_ERRORS.labels(failure.engine_id, failure.kind).inc()
    error = failure.to_error()
    exchange.error = error.code
    await _write(client, stream_error_event(error))
    await _finish(client, DONE)
    return client
