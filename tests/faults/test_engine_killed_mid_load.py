"""An engine process dies (SIGKILL) under streaming load: nothing hangs, nothing is lost that could be saved.

    client ×24 ──▶ gateway (auth off, local least-request picks) ──┬▶ enginesim A (1 engine, 4 seqs at a time)
                                                                   └▶ enginesim B (1 engine, 4 seqs at a time)
    engine agent: registers A and B from their /engines, publishes their load

Each engine runs at most 4 sequences at once and streams last ~2 s (time scale 0.05), so
with 24 requests at once each engine has 4 streams going and 8 requests queued, waiting
for a first token. Once the gateway has every request in flight and the client saw the
head of each of A's 4 streams, A is killed:

* A's 4 streams already relayed to their clients end with an SSE error event
  (`{"error": {..., "code": 502}}`) followed by `data: [DONE]`;
* A's 8 queued requests (no byte sent yet) are retried on B and complete there: the
  gateway logs "retrying on another engine" for as many request ids as A had queued
  (its in-flight gauge for A at the kill, less A's streams), and each of them, like every
  request not cut, answers with B's `x-strata-engine` and the full `max_tokens` in its
  usage chunk; `strata_gateway_retries_total` agrees;
* every client task ends within a deadline.

The retry budget is opened to 100 %: with the default (20 % of requests in flight, at
least 3) an engine crash with more queued requests than that budget turns the excess
into 502s by design, and this test is about the relay and failover mechanics.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from strata_testing import poll_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REQUESTS = 24
MAX_NUM_SEQS = 4
MAX_TOKENS = 48
CLIENT_DEADLINE_S = 60.0


@dataclass
class Outcome:
    """What one client saw of its streamed request."""

    request_id: str
    status: int | None = None
    engine: str | None = None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    error: str | None = None  # a client-side exception, if any

    @property
    def last_event(self) -> dict[str, Any] | None:
        return self.chunks[-1] if self.chunks else None

    @property
    def completion_tokens(self) -> int | None:
        usage = next((c["usage"] for c in reversed(self.chunks) if c.get("usage")), None)
        return None if usage is None else int(usage["completion_tokens"])


async def stream(http: aiohttp.ClientSession, url: str, model: str, outcome: Outcome) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"tell me a story {outcome.request_id}"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
    }
    try:
        async with http.post(url, json=body, headers={"x-request-id": outcome.request_id}) as response:
            outcome.engine = response.headers.get("x-strata-engine")
            outcome.status = response.status
            if response.status != 200:
                outcome.error = await response.text()
                return
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data: "):
                    continue
                data = line.removeprefix(b"data: ")
                if data == b"[DONE]":
                    outcome.done = True
                elif outcome.done:
                    outcome.error = f"event after [DONE]: {data!r}"
                else:
                    outcome.chunks.append(json.loads(data))
    except aiohttp.ClientError as exc:
        outcome.error = repr(exc)


async def test_killed_engine_fails_over_queued_requests_and_ends_running_streams(
    nats_url: str, cluster: Callable[..., Any]
) -> None:
    run = uuid.uuid4().hex[:6]
    model = f"kill-{run}"
    fleet = cluster(nats_url)
    engine_settings = {"model": model, "time_scale": 0.05, "max_num_seqs": MAX_NUM_SEQS}
    (sim_a, engines_a), (sim_b, engines_b) = await asyncio.gather(
        fleet.enginesim(f"a{run}", **engine_settings), fleet.enginesim(f"b{run}", **engine_settings)
    )
    engine_a, engine_b = engines_a[0]["engine_id"], engines_b[0]["engine_id"]
    gateway = fleet.gateway("gw", auth_enabled=False, retry_budget_percent=100)
    await asyncio.gather(fleet.agent([*engines_a, *engines_b]), gateway.wait_ready())
    await fleet.wait_serving(gateway, model, engines=2)

    outcomes = [Outcome(f"{run}-{i:02d}") for i in range(REQUESTS)]
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_DEADLINE_S)) as http:
        url = f"{gateway.url}/v1/chat/completions"
        tasks = [asyncio.create_task(stream(http, url, model, outcome)) for outcome in outcomes]
        try:

            async def loaded() -> tuple[int, int] | None:
                in_flight = await gateway.metric("strata_gateway_in_flight")
                heads_a = sum(o.engine == engine_a for o in outcomes)
                if in_flight < REQUESTS or heads_a < MAX_NUM_SEQS:
                    return None
                return heads_a, int(await gateway.metric("strata_gateway_engine_in_flight", engine=engine_a))

            heads_a, on_a = await poll_until(loaded, timeout=30, what="all requests in flight, A streaming")
            assert sim_a.kill() < 0
            killed_at = time.monotonic()
            streaming_on_a = {o.request_id for o in outcomes if o.engine == engine_a}
            finished, pending = await asyncio.wait(tasks, timeout=CLIENT_DEADLINE_S)
            ended = time.monotonic()
        finally:
            for task in tasks:
                task.cancel()
    assert not pending, f"{len(pending)} client requests still open {CLIENT_DEADLINE_S}s after the kill"
    for task in finished:
        task.result()

    retried = {
        r["client_request_id"]  # the gateway's own request id is another
        for r in gateway.log_records()
        if r.get("msg", "").startswith("retrying on another engine")
    }
    interrupted = [o for o in outcomes if o.engine == engine_a]
    completed = [o for o in outcomes if o.engine != engine_a]

    # A's streams that had reached their clients: an error event, then [DONE].
    assert {o.request_id for o in interrupted} == streaming_on_a
    assert len(interrupted) == heads_a == MAX_NUM_SEQS
    for o in interrupted:
        assert (o.status, o.done, o.error) == (200, True, None), o
        assert o.last_event is not None, o
        assert set(o.last_event) == {"error"}, o.last_event  # the event before [DONE] is the error, alone
        assert (o.last_event["error"]["code"], o.last_event["error"]["param"]) == (502, None), o.last_event
        assert o.completion_tokens is None  # cut short: no usage chunk
    # A's queued requests (no byte relayed yet) went to B and finished there.
    assert len(retried) == on_a - heads_a > 0
    assert retried <= {o.request_id for o in completed}
    for o in completed:
        assert (o.status, o.engine, o.done, o.error) == (200, engine_b, True, None), o
        assert o.completion_tokens == MAX_TOKENS, o
        assert o.chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert await gateway.metric("strata_gateway_retries_total") == len(retried)
    assert sim_b.running
    print(
        f"\n{REQUESTS} streams: {len(interrupted)} cut on the killed engine, {len(retried)} retried on the other, "
        f"{len(completed) - len(retried)} undisturbed; all ended {ended - killed_at:.1f}s after the kill, "
        f"{ended - started:.1f}s after the first was sent"
    )
