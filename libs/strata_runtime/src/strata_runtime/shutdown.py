"""Graceful shutdown: SIGTERM -> not ready -> drain in-flight work -> exit.

:class:`InFlight` counts work in progress (HTTP requests, streams, handled messages);
:class:`GracefulShutdown` turns SIGTERM/SIGINT into a stop request that a service's
main loop awaits, then drains with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

__all__ = ["GracefulShutdown", "InFlight"]

_log = logging.getLogger(__name__)


class InFlight:
    """A counter of work in progress that can be awaited down to zero."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        """Units of work in progress now."""
        return self._count

    def track(self) -> InFlight:
        """Count the enclosed block (``with inflight.track():``) as one unit of work in progress."""
        return self

    def __enter__(self) -> None:
        self._count += 1
        if self._count == 1:
            self._idle.clear()

    def __exit__(self, *_: object) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in progress; False if `timeout` expired first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class GracefulShutdown:
    """Turns termination signals into an awaitable stop request.

    Args:
        signals: the signals that request a stop (a second one forces exit).
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self._signals = signals
        self._stop = asyncio.Event()
        self.reason = ""

    def install(self) -> None:
        """Register the signal handlers on the running loop (call from inside it)."""
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.add_signal_handler(sig, self.request_stop, sig.name)

    def request_stop(self, reason: str = "requested") -> None:
        """Ask the service to stop (idempotent); a repeated signal is logged and ignored."""
        if self._stop.is_set():
            _log.warning("stop already in progress (%s)", reason)
            return
        self.reason = reason
        _log.info("stopping", extra={"reason": reason})
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    async def wait(self) -> None:
        """Return once a stop is requested."""
        await self._stop.wait()

    async def drain(self, inflight: InFlight, grace_s: float) -> bool:
        """Wait up to `grace_s` for `inflight` to reach zero; False if work was cut off."""
        started = time.monotonic()
        drained = await inflight.wait_idle(grace_s)
        _log.info(
            "drained" if drained else "drain deadline passed",
            extra={"in_flight": inflight.count, "waited_s": round(time.monotonic() - started, 3)},
        )
        return drained
