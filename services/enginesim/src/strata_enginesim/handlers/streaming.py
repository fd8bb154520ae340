"""Server-sent events as vLLM writes them, and noticing clients that went away.

Framing (vLLM 0.32, ``chat_completion/serving.py`` and ``completion/serving.py``): each
event is ``data: <compact JSON>\\n\\n`` and the stream ends with ``data: [DONE]\\n\\n``;
the response type is ``text/event-stream; charset=utf-8`` (Starlette's StreamingResponse).

aiohttp does not cancel a handler when its client disconnects unless the server was built
with ``handler_cancellation=True`` (strata_runtime's HttpServer is not), so a request
waiting on the engine would run to completion for nobody. :class:`DisconnectWatch`
polls the watched requests' transports and cancels the handler task of each one whose
connection is gone; the handler's ``finally`` then closes the engine iterator, which
aborts the request in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Final

import orjson
from aiohttp import web

__all__ = ["DONE", "DisconnectWatch", "open_event_stream", "sse_event"]

DONE: Final = b"data: [DONE]\n\n"


def sse_event(payload: object) -> bytes:
    """One ``data:`` event with `payload` as compact UTF-8 JSON (pydantic's model_dump_json bytes)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def open_event_stream(request: web.Request, headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Send the 200 head of an SSE response (chunked transfer encoding)."""
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    await response.prepare(request)
    return response


class DisconnectWatch:
    """Cancels the handler of a watched request once its client connection is closed.

    One poller task serves every watched request of the owning app; it exists only while
    something is watched. Cancellation is delivered to ``request.task`` (the task running
    the handler), as aiohttp's own ``handler_cancellation`` would.

    Args:
        interval_s: how often the transports are checked.
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self._interval_s = interval_s
        self._watched: dict[asyncio.Task[None], web.BaseRequest] = {}  # handler task -> its request
        self._poller: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, request: web.BaseRequest) -> Iterator[None]:
        """Watch `request` for the duration of the block (call from its handler)."""
        task = request.task
        self._watched[task] = request
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="enginesim-disconnect-watch")
        try:
            yield
        finally:
            self._watched.pop(task, None)

    async def close(self) -> None:
        """Stop the poller (at application cleanup); watched requests are left alone."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def _poll(self) -> None:
        while self._watched:
            await asyncio.sleep(self._interval_s)
            for task, request in list(self._watched.items()):
                transport = request.transport
                if transport is None or transport.is_closing():
                    del self._watched[task]
                    task.cancel()
