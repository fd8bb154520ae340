"""The usage path end to end: JetStreamUsageSink → JetStream → ledger → PostgreSQL, with faults.

The fault test runs its own nats-server on a port fixed for the test and a persistent
store directory (EmbeddedNats always picks a new port and deletes its store on close, so
it cannot "come back"), and the ledger as real `python -m strata_gateway.ledger` processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from strata_contracts.messages import UsageRecord
from strata_gateway.domain.ports import UsageEntry
from strata_gateway.ledger.app import APP_NAME
from strata_gateway.ledger.consumer import LedgerConsumer
from strata_gateway.ledger.publisher import JetStreamUsageSink
from strata_gateway.ledger.settings import LedgerSettings
from strata_gateway.ledger.spool import SpoolInUse, UsageSpool
from strata_runtime import Broker, InFlight
from strata_runtime.plane import ensure_event_plane
from strata_runtime.settings import settings_table
from strata_testing import EmbeddedNats, free_port, poll_until
from strata_testing.nats import RestartableNats

T = TypeVar("T")


def usage(request_id: str, tenant: str, tokens: int = 7) -> UsageRecord:
    return UsageRecord(
        request_id=request_id, tenant_id=tenant, api_key_id="0123456789ab", model="tiny", engine_id="e0",
        strategy="least-request", endpoint="/v1/chat/completions", stream=True, status=200, prompt_tokens=tokens,
        completion_tokens=3, cached_tokens=2, ttft_ms=12.5, latency_ms=40.0, started_at=time.time(),
    )  # fmt: skip


async def ledger_ids(url: str, tenant: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT request_id FROM usage WHERE tenant_id = $1", tenant)
    finally:
        await conn.close()
    return [row["request_id"] for row in rows]


@pytest_asyncio.fixture
async def ledger(nats_url: str, pool: asyncpg.Pool[asyncpg.Record]) -> AsyncIterator[LedgerConsumer]:
    broker = await Broker.connect(nats_url, "ledger-test")
    await ensure_event_plane(broker)
    consumer = LedgerConsumer(broker, pool, InFlight(), durable=f"test-{uuid.uuid4().hex[:8]}", fetch_timeout_s=0.2)
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop()
        await task
        await consumer.close()
        await broker.close()


async def test_each_request_is_one_row_however_often_it_is_published(
    nats_url: str, postgres_url: str, ledger: LedgerConsumer, tmp_path: Path
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    broker = await Broker.connect(nats_url, "gateway-test")
    sink = JetStreamUsageSink(broker, tmp_path / "spool")
    await sink.start()
    try:
        records = [usage(f"{tenant}-{i}", tenant) for i in range(30)]
        records[:2] = [r.model_copy(update={"client_request_id": "reused-by-the-client"}) for r in records[:2]]
        await sink.record_many([UsageEntry.of(r) for r in records[:20]])  # one batch, acks awaited together
        await asyncio.gather(*(sink.record(r) for r in records[20:]))
        await asyncio.gather(*(sink.record(r) for r in records[:10]))  # a gateway retrying the same requests
        await broker.publish_js(f"strata.usage.v1.{tenant}", usage(f"{tenant}-0", tenant, tokens=999))  # no msg id
    finally:
        await sink.close()
        await broker.close()

    ids = await poll_until(
        lambda: _when(ledger_ids(postgres_url, tenant), lambda ids: len(ids) >= 30), what="30 rows in the ledger"
    )
    assert sorted(ids) == sorted(r.request_id for r in records)
    conn = await asyncpg.connect(postgres_url)
    try:
        row = await conn.fetchrow("SELECT * FROM usage WHERE request_id = $1", f"{tenant}-0")
    finally:
        await conn.close()
    assert row is not None
    assert (row["prompt_tokens"], row["cached_tokens"], row["stream"], row["engine_id"]) == (7, 2, True, "e0")
    assert row["client_request_id"] == "reused-by-the-client"


async def test_records_spooled_while_nats_is_down_survive_a_restart_and_replay(
    nats_url: str, postgres_url: str, ledger: LedgerConsumer, tmp_path: Path
) -> None:
    tenant, spool = f"t-{uuid.uuid4().hex[:8]}", tmp_path / "spool"
    with EmbeddedNats(tmp_path / "lost-nats") as lost_url:
        broker = await Broker.connect(lost_url, "gateway-before")
        sink = JetStreamUsageSink(broker, spool, publish_timeout_s=0.5)
        await sink.start()
    await poll_until(lambda: _value(not broker.connected), what="the gateway notices NATS is gone")
    records = [usage(f"{tenant}-{i}", tenant) for i in range(25)]
    async with asyncio.timeout(5):  # record() never waits on the dead connection
        await sink.record_many([UsageEntry.of(r) for r in records[:15]])
        await asyncio.gather(*(sink.record(r) for r in records[15:]))
    assert sink.spooled == 25
    await sink.close()  # the gateway process ends with its records on disk
    await broker.close()
    leftover = UsageSpool(spool)
    assert leftover.pending_records() == 25
    leftover.close()

    broker = await Broker.connect(nats_url, "gateway-after")  # a new process, NATS reachable
    sink = JetStreamUsageSink(broker, spool, replay_interval_s=0.1)
    await sink.start()
    try:
        await poll_until(lambda: _value(sink.spooled == 0), what="the spool is replayed")
        ids = await poll_until(
            lambda: _when(ledger_ids(postgres_url, tenant), lambda ids: len(ids) >= 25), what="replayed rows"
        )
    finally:
        await sink.close()
        await broker.close()
    assert sorted(ids) == sorted(r.request_id for r in records)
    assert not list(spool.glob("*.jsonl"))


def test_spool_keeps_order_skips_a_torn_line_and_seals_on_restart(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path)
    spool.append([b'{"n": 1}', b'{"n": 2}'])
    spool.append([b'{"n": 3}'])
    assert spool.sealed() == []  # the open segment is not replayable yet
    with open(spool.directory / "usage-000000000001.jsonl", "ab") as segment:
        segment.write(b'{"n": 4, "tor')  # a crash in the middle of a write
    with pytest.raises(SpoolInUse):
        UsageSpool(tmp_path)  # one owner at a time
    spool.close()  # the process ends

    restarted = UsageSpool(tmp_path)
    restarted.append([b'{"n": 5}'])
    restarted.seal()

    segments = restarted.sealed()
    assert [p.name for p in segments] == ["usage-000000000001.jsonl", "usage-000000000002.jsonl"]
    lines = [line for p in segments for line in UsageSpool.read(p)]
    assert lines == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}', b'{"n": 5}']
    restarted.remove(segments[0])
    assert restarted.pending_records() == 1


def test_ledger_entry_point_lists_settings_and_names_a_missing_database() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    help_ = subprocess.run([sys.executable, "-m", "strata_gateway.ledger", "--help"], capture_output=True, text=True,
                           timeout=60, env=env)  # fmt: skip
    missing = subprocess.run([sys.executable, "-m", "strata_gateway.ledger"], capture_output=True, text=True,
                             timeout=60, env=env)  # fmt: skip

    assert help_.returncode == 0
    assert all(name in help_.stdout for name, _, _ in settings_table(LedgerSettings))
    assert missing.returncode == 2
    assert "STRATA_LEDGER_DATABASE_URL" in missing.stderr
    assert "Traceback" not in missing.stderr


# --- the fault test ------------------------------------------------------------------------------


class LedgerProcess:
    """`python -m strata_gateway.ledger` with its HTTP probes on a known port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        env = {**env, "STRATA_LEDGER_PORT": str(self.port)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "strata_gateway.ledger"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}{path}") as response:
            return response.status, await response.text()

    async def wait_ready(self) -> None:
        await poll_until(lambda: _when(self.get("/readyz"), lambda r: r[0] == 200), timeout=30, what="ledger ready")

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


async def _kill_ledger_sessions(url: str, stop: asyncio.Event, killed: list[int]) -> None:
    """pg_terminate_backend every ledger session (by application_name), every 300 ms, until `stop`.

    The pause leaves a reconnected ledger time to write a batch before the next kill, even
    on a slow machine (killing every 50 ms starved it there for good).
    """
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            killed[0] += await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = $1",
                APP_NAME,
            )
            await asyncio.sleep(0.3)
    finally:
        await conn.close()


@pytest.mark.integration
async def test_no_usage_is_lost_or_doubled_through_nats_ledger_and_postgres_faults(
    postgres_url: str, tmp_path: Path
) -> None:
    tenant, n = f"fault-{uuid.uuid4().hex[:6]}", 400
    ids = [f"{tenant}-{i:04d}" for i in range(n)]
    nats = RestartableNats(free_port(), tmp_path / "js", tmp_path / "nats.log")
    nats.start()
    env = {**os.environ, "STRATA_NATS_URL": nats.url, "STRATA_DATABASE_URL": postgres_url,
           "STRATA_LEDGER_BATCH_SIZE": "25", "STRATA_LEDGER_ACK_WAIT_S": "3", "STRATA_LEDGER_RETRY_MAX_S": "0.5",
           "STRATA_LEDGER_FETCH_TIMEOUT_S": "0.3", "STRATA_LEDGER_SHUTDOWN_GRACE_S": "5"}  # fmt: skip
    ledger = LedgerProcess(env, tmp_path / "ledger-1.log")
    broker = await Broker.connect(nats.url, "gateway-fault")
    sink = JetStreamUsageSink(broker, tmp_path / "spool", publish_timeout_s=0.5, replay_interval_s=0.2)
    await sink.start()

    sent: list[str] = []

    async def send(first: int, last: int, pace: float = 0.0) -> None:
        for i in range(first, last, 10):
            batch = ids[i : min(i + 10, last)]
            await asyncio.gather(*(sink.record(usage(request_id, tenant)) for request_id in batch))
            sent.extend(batch)
            await asyncio.sleep(pace)

    try:
        await ledger.wait_ready()
        await send(0, 100)  # (1) all healthy
        sending = asyncio.create_task(send(100, 200, pace=0.02))  # (2) NATS stops while records are in flight
        await poll_until(lambda: _value(len(sent) >= 130), what="half of the second hundred sent")
        await asyncio.to_thread(nats.stop)
        assert ledger.stop(signal.SIGKILL) == -signal.SIGKILL  # (3) the ledger crashes mid-stream
        await sending
        await send(200, 250)  # still down: straight to the spool
        spooled_during_outage = sink.spooled
        await asyncio.to_thread(nats.start)  # (4) NATS back on the same port with its store
        ledger = LedgerProcess(env, tmp_path / "ledger-2.log")
        await ledger.wait_ready()
        stop_killing, killed = asyncio.Event(), [0]
        killer = asyncio.create_task(_kill_ledger_sessions(postgres_url, stop_killing, killed))  # (5) PG sessions die
        await poll_until(lambda: _value(broker.connected), timeout=15, what="gateway reconnected")
        await send(250, 350, pace=0.02)
        await poll_until(
            lambda: _when(ledger_ids(postgres_url, tenant), lambda got: len(got) >= 300 and killed[0] >= 2),
            timeout=30, what="300 rows written while the ledger's sessions are being killed",
        )  # fmt: skip
        stop_killing.set()
        await killer
        await ledger.wait_ready()
        status, metrics = await ledger.get("/metrics")
        assert ledger.stop(signal.SIGTERM) == 0  # (6) graceful restart
        ledger = LedgerProcess(env, tmp_path / "ledger-3.log")
        await send(350, 400)
        await send(100, 150)  # duplicates of records that were spooled or in flight

        rows = await poll_until(
            lambda: _when(ledger_ids(postgres_url, tenant), lambda got: len(got) >= n), timeout=60, what="every row"
        )
        await poll_until(lambda: _value(sink.spooled == 0), timeout=30, what="spool drained")
    finally:
        await sink.close()
        await broker.close()
        if ledger.proc.poll() is None:
            ledger.stop(signal.SIGTERM)
        nats.stop()

    assert len(rows) == n
    assert sorted(rows) == ids
    assert not list((tmp_path / "spool").glob("*.jsonl"))
    print(
        f"\nfault test: {n} records, {spooled_during_outage} spooled during the outage, {killed[0]} PostgreSQL sessions"
        f" killed; ledger-2 metrics: "
        + "; ".join(line for line in metrics.splitlines() if line.startswith(("strata_ledger_",)) and status == 200)
    )


async def _when(coro: Awaitable[T], check: Callable[[T], bool]) -> T | None:
    value = await coro
    return value if check(value) else None


async def _value(value: T) -> T:
    return value
