"""Fixtures of the gateway's socket-level tests (the HTTP server and the upstream pool).

* `run(scenario)`: runs an async scenario on a fresh event loop, once on asyncio's and once
  on uvloop's (the gateway process runs on uvloop), with a 30 s ceiling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

Scenario = Callable[[], Coroutine[Any, Any, None]]
Run = Callable[[Scenario], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a scenario on a fresh loop of the kind in the test id (30 s at most)."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(scenario: Scenario) -> None:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(asyncio.wait_for(scenario(), 30))

    return runner
