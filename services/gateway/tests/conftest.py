"""Fixtures shared by the gateway's tests.

* `run(scenario)`: runs an async scenario on a fresh event loop, once on asyncio's and once
  on uvloop's (the gateway process runs on uvloop), with a 30 s ceiling.
* `pool`: an asyncpg pool on the module's fresh database, the gateway's migrations applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import uvloop

from strata_gateway.adapters.migrate import migrate

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


@pytest_asyncio.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=4)
    await migrate(pool)
    try:
        yield pool
    finally:
        await pool.close()
