"""Cancelling the work of HTTP clients that went away.

:class:`HttpServer` runs aiohttp without `handler_cancellation`, so a handler whose
client disconnected keeps running; a request waiting for an engine's first token would
hold the engine for nobody. While a stream is being written a disconnect shows up as a
failed write, but before that nothing notices. :class:`DisconnectWatch` polls the
transports of the watched requests and cancels the handler task of each one whose
connection is gone; the handler's cleanup then releases the upstream work (the
simulator aborts the request in its engine). The gateway serves HTTP with its own
server, which cancels the handler from the connection's `connection_lost` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import web

__all__ = ["DisconnectWatch"]


class DisconnectWatch:
    """One poller task for every watched request of the process; it runs only while needed.

    Args:
        interval_s: how often transports are checked.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self._interval_s = interval_s
        self._watched: dict[asyncio.Task[None], web.BaseRequest] = {}
        self._poller: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, request: web.BaseRequest) -> Iterator[None]:
        """Watch `request` for the duration of the block (call from its handler)."""
        task = request.task
        self._watched[task] = request
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="disconnect-watch")
        try:
            yield
        finally:
            self._watched.pop(task, None)

    async def close(self) -> None:
        """Stop the poller (at shutdown); watched requests are left alone."""
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
