"""Every admitted request leaves exactly one usage row, through NATS and PostgreSQL restarts.

    client (4 workers) ──▶ gateway (auth on: tenant + key from `strata_gateway.admin`) ──▶ enginesim
                              │ UsageRecord ─▶ JetStream (or its spool while NATS is away)
                              ▼
                      NATS (fixed port, store kept) ──▶ ledger ──▶ PostgreSQL (embedded, this test's own)

At least 200 requests with their own `x-request-id`, in four phases driven by how many
have been answered, so that each stop and each start happens while requests are in flight:

    NATS stopped (records spooled) ─▶ NATS started again, same port and store
    ─▶ PostgreSQL stopped (the ledger's inserts fail; it naks and retries) ─▶ started again

Between phases the test waits (polling, with requests still flowing where that is what
makes progress) for the fault to have been seen: the ledger not ready while NATS is gone,
the tenant's shared limits document back in NATS, a failed ledger insert while PostgreSQL
is gone.

The requests: most succeed (streamed or not); every 10th is refused by the engine
(`max_tokens` over the context: the engine's 400, after admission); every 20th is a
stream the client abandons after its first event (recorded as 499). The gateway caches
the key for longer than the test (`auth_cache_ttl_s`), so PostgreSQL being down never
refuses a request before admission: every request answered was admitted and must be
billed. The tenant has an RPM limit far above the load, so admissions go through the
NATS limiter too; once NATS is back, no admission may fail open any more (a restarted
NATS has lost the limiter's memory bucket, which must be re-created).

Then: the `usage` table holds exactly the request ids the gateway echoed (compared as sets
and counts), each with the status the client saw (499 for the abandoned ones), and the
gateway's spool is empty.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import nats
import pytest
from nats.js.errors import NotFoundError

from strata_gateway.adapters.limits_nats import LIMITS_BUCKET
from strata_testing import poll_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

N = 200
WORKERS = 4
TENANT_RPM = 1_000_000  # never reached: admissions go through the limiter, which never refuses
EXPECTED_STATUS = {"ok": 200, "refused": 400, "abandoned": 499}
MAX_ANSWER_S = 5.0  # requests take ~20 ms; the limiter gives NATS 0.25 s per decision before failing open


@dataclass
class Answer:
    request_id: str  # the x-request-id the gateway echoed
    kind: str
    status: int  # as the ledger should record it: 499 for a stream the client abandoned
    error: dict[str, Any] | None = None
    seconds: float = 0.0


def kind_of(i: int) -> str:
    if i % 20 == 7:
        return "abandoned"
    return "refused" if i % 10 == 3 else "ok"


async def send(http: aiohttp.ClientSession, url: str, model: str, key: str, i: int, request_id: str) -> Answer:
    kind = kind_of(i)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"bill me {request_id}"}],
        "max_tokens": {"ok": 8, "refused": 100_000, "abandoned": 3000}[kind],
        "ignore_eos": True,
        "stream": kind == "abandoned" or (kind == "ok" and i % 2 == 0),
    }
    headers = {"Authorization": f"Bearer {key}", "x-request-id": request_id}
    started = time.monotonic()
    async with http.post(url, json=body, headers=headers) as response:
        echoed = response.headers["x-request-id"]
        if kind == "abandoned" and response.status == 200:
            await response.content.readline()  # the first event: the stream is running
            response.close()  # the client goes away mid-stream
            return Answer(echoed, kind, 499, seconds=time.monotonic() - started)
        payload = await response.read()
        error = json.loads(payload).get("error") if response.status != 200 else None
        return Answer(echoed, kind, response.status, error, time.monotonic() - started)


class Load:
    """Workers that send the requests the driver releases (ids `<prefix>-<i>`), keeping every answer."""

    def __init__(self, http: aiohttp.ClientSession, url: str, model: str, key: str, prefix: str) -> None:
        self._http, self._url, self._model, self._key, self._prefix = http, url, model, key, prefix
        self._queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
        self.sent: list[str] = []
        self.answers: dict[str, Answer] = {}  # by echoed request id
        self._workers = [asyncio.create_task(self._work()) for _ in range(WORKERS)]

    def release(self, count: int) -> None:
        for _ in range(count):
            i = len(self.sent)
            self.sent.append(f"{self._prefix}-{i:03d}")
            self._queue.put_nowait((i, self.sent[-1]))

    async def answered(self, count: int) -> None:
        async def enough() -> bool:
            self._check_workers()
            return len(self.answers) >= count

        await poll_until(enough, timeout=60, what=f"{count} answers")

    async def phase(self, count: int, *, fault_after: int, fault: Callable[[], None]) -> None:
        """Release `count` requests; `fault()` (in a thread) once `fault_after` of them are answered."""
        base = len(self.sent)
        self.release(count)
        await self.answered(base + fault_after)
        await asyncio.to_thread(fault)
        await self.answered(base + count)

    async def busy_until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        """Keep one request in flight until `check()` holds."""

        async def done() -> bool:
            self._check_workers()
            if self._queue.empty():
                self.release(1)
            return await check()

        await poll_until(done, timeout=30, interval=0.05, what=what)

    async def close(self) -> None:
        for _ in self._workers:
            self._queue.put_nowait(None)
        await asyncio.gather(*self._workers)

    def _check_workers(self) -> None:
        for worker in self._workers:
            if worker.done():
                worker.result()  # a worker that failed fails the test now

    async def _work(self) -> None:
        while (item := await self._queue.get()) is not None:
            answer = await send(self._http, self._url, self._model, self._key, *item)
            self.answers[answer.request_id] = answer


async def usage_rows(url: str, tenant: str) -> dict[str, int]:
    """The tenant's rows: the client's x-request-id ─▶ status (a client id on two rows fails the test)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch("SELECT client_request_id, status FROM usage WHERE tenant_id = $1", tenant)
    finally:
        await conn.close()
    by_client_id = {row["client_request_id"]: row["status"] for row in rows}
    assert len(by_client_id) == len(rows), "a request has more than one usage row"
    return by_client_id


async def test_every_admitted_request_is_one_usage_row_through_nats_and_postgres_restarts(
    restartable_nats: Any, restartable_postgres: Any, cluster: Callable[..., Any]
) -> None:
    nats_server, postgres = restartable_nats, restartable_postgres
    run = uuid.uuid4().hex[:6]
    model, tenant = f"ledger-{run}", f"ledger-{run}"
    fleet = cluster(nats_server.url, postgres.url)
    await fleet.admin("tenants", "create", tenant, "--rpm", str(TENANT_RPM))
    key = await fleet.admin("keys", "create", "--tenant", tenant)

    gateway = fleet.gateway("gw", auth_cache_ttl_s=600)
    ledger = fleet.ledger(batch_size=25)
    _, engines = await fleet.enginesim(f"s{run}", model=model)
    await asyncio.gather(fleet.agent(engines), gateway.wait_ready(), ledger.wait_ready())
    await fleet.wait_serving(gateway, model, engines=1, headers={"Authorization": f"Bearer {key}"})

    async def ledger_metric(stage: str) -> float:
        return float(await ledger.metric("strata_ledger_failures_total", stage=stage))

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        load = Load(http, f"{gateway.url}/v1/chat/completions", model, key, tenant)
        try:
            await load.phase(70, fault_after=40, fault=nats_server.stop)
            await poll_until(lambda: _not_ready(ledger), timeout=30, what="the ledger noticing NATS is gone")
            spooled = await gateway.metric("strata_gateway_usage_records_total", outcome="spooled")
            await load.phase(40, fault_after=10, fault=nats_server.start)
            await load.busy_until(lambda: _limits_document(nats_server.url, tenant), "limits shared in NATS again")
            fail_open = await _fail_open(gateway)
            await load.phase(40, fault_after=10, fault=postgres.stop)
            await load.busy_until(lambda: _at_least(ledger_metric("insert"), 1), "a ledger insert failing")
            await load.phase(max(40, N - len(load.sent)), fault_after=10, fault=postgres.start)
        finally:
            await load.close()
    sent, answers = load.sent, load.answers

    async def all_rows() -> dict[str, int] | None:
        rows = await usage_rows(postgres.url, tenant)
        return rows if len(rows) >= len(sent) else None

    await poll_until(all_rows, timeout=60, interval=0.2, what=f"{len(sent)} usage rows")
    await poll_until(
        lambda: _at_most(gateway.metric("strata_gateway_usage_spooled_records"), 0), timeout=30, what="spool drained"
    )
    rows = await usage_rows(postgres.url, tenant)  # again, for anything late (one row per gateway request id)

    assert len(sent) >= N
    assert sorted(answers) == sorted(sent)  # every request answered, with its own id echoed
    wrong = {rid: a for rid, a in answers.items() if a.status != EXPECTED_STATUS[a.kind]}
    assert not wrong, wrong
    assert all(a.error is not None and a.error["code"] == 400 for a in answers.values() if a.kind == "refused")
    assert len(rows) == len(sent)
    assert sorted(rows) == sorted(sent)
    assert rows == {rid: a.status for rid, a in answers.items()}
    slowest = max(answers.values(), key=lambda a: a.seconds)
    assert slowest.seconds < MAX_ANSWER_S, slowest  # no request waited on NATS or PostgreSQL being away
    assert spooled > 0
    assert await _fail_open(gateway) == fail_open, "admissions failed open while NATS was up"
    assert not list((fleet.workdir / "spool-gw").glob("*.jsonl"))
    kinds = [a.kind for a in answers.values()]
    print(
        f"\n{len(sent)} requests ({kinds.count('refused')} refused by the engine, {kinds.count('abandoned')} "
        f"abandoned): {len(rows)} usage rows; {spooled:.0f} records spooled while NATS was down, "
        f"{await ledger_metric('insert'):.0f} ledger inserts failed while PostgreSQL was down; slowest answer "
        f"{slowest.seconds:.2f}s; "
        f"{time.monotonic() - started:.1f}s of load and catch-up"
    )


async def _limits_document(url: str, tenant: str) -> bool:
    """Whether the tenant's shared limits document exists (the bucket is memory-only: a restart loses it)."""
    client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        kv = await client.jetstream(timeout=1).key_value(LIMITS_BUCKET)
        return bool((await kv.get(f"tenant.{tenant}")).value)
    except NotFoundError:  # the bucket or the document: not there (yet)
        return False
    finally:
        await client.close()


async def _fail_open(gateway: Any) -> float:
    """Admissions decided without the shared state because it was gone (not merely slow)."""
    reasons = ("disconnected", "unbound", "error")
    return float(sum([await gateway.metric("strata_gateway_limiter_fail_open_total", reason=r) for r in reasons]))


async def _not_ready(service: Any) -> bool:
    return bool((await service.get("/readyz"))[0] != 200)


async def _at_least(value: Awaitable[float], bound: float) -> bool:
    return await value >= bound


async def _at_most(value: Awaitable[float], bound: float) -> bool:
    return await value <= bound
