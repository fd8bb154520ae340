"""Wait for a condition with a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["PollTimeout", "poll_until", "wait_until"]

T = TypeVar("T")


class PollTimeout(AssertionError):
    """The condition did not hold before the deadline (an assertion failure in tests)."""


def wait_until(check: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Call `check` until it returns a truthy value and return that value.

    Exceptions raised by `check` count as "not yet"; the last one is reported on timeout.

    Raises:
        PollTimeout: no truthy result within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - reported below if it never succeeds
            last_error = exc
        if time.monotonic() >= deadline:
            raise PollTimeout(_message(what, timeout, last_error)) from last_error
        time.sleep(interval)


async def poll_until(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Async twin of :func:`wait_until`: await `check()` until it yields a truthy value."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = await check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - reported below if it never succeeds
            last_error = exc
        if time.monotonic() >= deadline:
            raise PollTimeout(_message(what, timeout, last_error)) from last_error
        await asyncio.sleep(interval)


def _message(what: str, timeout: float, error: BaseException | None) -> str:
    text = f"condition {what or '(unnamed)'} not met within {timeout:.1f}s"
    return f"{text}; last error: {error!r}" if error else text
