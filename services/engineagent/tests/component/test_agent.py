"""The agent in-process against fake engines (conftest) and a real embedded NATS.

Each test uses fresh engine ids, so tests share the session's NATS and its streams
without seeing each other's messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError
from prometheus_client import REGISTRY

from strata_contracts import subjects
from strata_contracts.messages import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EngineKind,
    EngineLoad,
    EngineRegistration,
    HashScheme,
    KvEventBatch,
    decode,
)
from strata_contracts.vllm_kv_events import WireShape
from strata_testing import poll_until

MakeEngine = Callable[..., Awaitable[Any]]
StartAgent = Callable[..., Awaitable[Any]]


def new_id() -> str:
    return f"e-{uuid.uuid4().hex[:10]}"


def engine_entry(
    engine: Any, engine_id: str, *, events: bool = True, replay: bool = True, **extra: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {"engine_id": engine_id, "url": engine.url, **extra}
    if events:
        entry["kv_events_endpoint"] = engine.events_endpoint
        if replay:
            entry["kv_replay_endpoint"] = engine.replay_endpoint
    return entry


class Collector:
    """Messages received on a subscription, decoded."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.msgs: list[Msg] = []

    async def until(self, check: Callable[[list[Any]], bool], what: str, timeout: float = 10.0) -> list[Any]:
        async def ready() -> list[Any] | None:
            return self.items if check(self.items) else None

        return await poll_until(ready, timeout=timeout, what=what)


async def collect_loads(nats_client: NatsClient, engine_id: str) -> Collector:
    collector = Collector()

    async def on_msg(msg: Msg) -> None:
        collector.items.append(decode(EngineLoad, msg.data))

    await nats_client.subscribe(subjects.engine_load(engine_id), cb=on_msg)
    return collector


async def collect_kv(nats_client: NatsClient, engine_id: str) -> Collector:
    collector = Collector()

    async def on_msg(msg: Msg) -> None:
        collector.msgs.append(msg)
        collector.items.append(decode(KvEventBatch, msg.data))

    js = nats_client.jetstream()
    await js.subscribe(subjects.kv_events(engine_id), cb=on_msg, ordered_consumer=True)
    return collector


def agent_metric(name: str, engine_id: str, **labels: str) -> float:
    """A sample of the agent's own Prometheus metrics (0 when never counted)."""
    return REGISTRY.get_sample_value(name, {"engine": engine_id, **labels}) or 0.0


def is_resync(batch: KvEventBatch) -> bool:
    return batch.events == [AllBlocksCleared(resync=True)]


def summary(batches: list[KvEventBatch]) -> list[str | int]:
    """'R' for a resync marker, else the seq (checked against the block hash it carries)."""
    out: list[str | int] = []
    for batch in batches:
        if is_resync(batch):
            out.append("R")
            continue
        (event,) = batch.events
        assert isinstance(event, BlockStored | BlockRemoved)
        assert event.block_hashes == [1000 + batch.seq]
        out.append(batch.seq)
    return out


async def kv_setup(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient, *, replay: bool = True, **knobs: Any
) -> tuple[Any, str, Collector, Any]:
    engine = await make_engine(**knobs)
    engine_id = new_id()
    agent = await start_agent([engine_entry(engine, engine_id, replay=replay)])
    await engine.wait_subscribed()
    return engine, engine_id, await collect_kv(nats_client, engine_id), agent


# --- load ---------------------------------------------------------------------------------


async def test_publishes_load_with_gauges_and_rates(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient
) -> None:
    engine = await make_engine()
    m = engine.metrics
    m.running, m.waiting, m.kv_usage = 3, 7, 0.25
    m.prompt_tokens, m.generation_tokens, m.prefix_queries, m.prefix_hits = 1000, 100, 1000, 200
    engine_id = new_id()
    loads = await collect_loads(nats_client, engine_id)
    await start_agent([engine_entry(engine, engine_id, events=False)])
    await loads.until(lambda items: len(items) >= 2, "two loads")

    # One step of the counters, applied at once: 4000 prompt, 400 generated, 3 of 4 queried tokens hit.
    m.prompt_tokens, m.generation_tokens = 5000, 500
    m.prefix_queries, m.prefix_hits, m.preemptions = 5000, 3200, 2
    items = await loads.until(lambda items: any(load.prompt_tps > 0 for load in items), "a load with rates")

    (moved,) = [load for load in items if load.prompt_tps > 0]
    assert (moved.running, moved.waiting, moved.kv_usage, moved.healthy) == (3, 7, 0.25, True)
    assert moved.prompt_tps / moved.generation_tps == pytest.approx(10.0)
    assert moved.prefix_hit_rate == pytest.approx(3000 / 4000)
    assert moved.preemptions == 2
    assert sum(load.preemptions for load in items) == 2
    seqs = [load.seq for load in items]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_failed_scrapes_publish_unhealthy_loads(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient
) -> None:
    engine = await make_engine()
    engine.metrics.running = 4
    engine_id = new_id()
    loads = await collect_loads(nats_client, engine_id)
    await start_agent([engine_entry(engine, engine_id, events=False)])

    engine.failing = True
    items = await loads.until(lambda items: any(not load.healthy for load in items), "an unhealthy load")
    unhealthy = next(load for load in items if not load.healthy)
    assert (unhealthy.running, unhealthy.prompt_tps) == (4, 0.0)  # last known gauges, no rates

    engine.failing = False
    await loads.until(lambda items: items[-1].healthy, "healthy again")


# --- registry -----------------------------------------------------------------------------


async def registry_entry(nats_client: NatsClient, engine_id: str) -> EngineRegistration:
    kv = await nats_client.jetstream().key_value(subjects.ENGINE_REGISTRY_BUCKET)
    entry = await kv.get(engine_id)
    assert entry.value is not None
    return decode(EngineRegistration, entry.value)


async def test_registers_engines_with_discovered_config_and_deletes_keys_on_shutdown(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient
) -> None:
    vllm = await make_engine()
    sim = await make_engine(model="sim-model", version={"version": "0.1.0", "engine": "enginesim"})
    sim.metrics.block_size, sim.metrics.hash_algo, sim.metrics.num_gpu_blocks = 16, "xxhash", 512
    vllm_id, sim_id = new_id(), new_id()
    agent = await start_agent(
        [engine_entry(vllm, vllm_id), engine_entry(sim, sim_id, events=False, labels={"pool": "sim"})]
    )

    reg = await poll_until(lambda: registry_entry(nats_client, vllm_id), what="vllm registered")
    assert (reg.model, reg.max_model_len, reg.block_size, reg.num_blocks) == ("tiny", 4096, 128, 4096)
    assert (reg.hash_scheme, reg.kind, reg.kv_events, reg.agent_id) == (
        HashScheme.SHA256_CBOR,
        EngineKind.VLLM,
        True,
        "test-agent",
    )
    assert str(reg.url).rstrip("/") == vllm.url
    sim_reg = await poll_until(lambda: registry_entry(nats_client, sim_id), what="simulator registered")
    assert (sim_reg.model, sim_reg.kind, sim_reg.block_size, sim_reg.hash_scheme) == (
        "sim-model",
        EngineKind.SIMULATOR,
        16,
        HashScheme.XXHASH,
    )
    assert (sim_reg.kv_events, sim_reg.labels) == (False, {"pool": "sim"})

    async def heartbeat_moved() -> bool:
        return (await registry_entry(nats_client, vllm_id)).heartbeat_ts > reg.heartbeat_ts

    await poll_until(heartbeat_moved, what="a later heartbeat")

    await agent.stop()
    for engine_id in (vllm_id, sim_id):
        with pytest.raises(KeyNotFoundError):
            await registry_entry(nats_client, engine_id)


async def test_key_of_a_silent_engine_is_deleted_and_restored(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient
) -> None:
    engine = await make_engine()
    engine_id = new_id()
    await start_agent([engine_entry(engine, engine_id, events=False)])
    await poll_until(lambda: registry_entry(nats_client, engine_id), what="registered")

    engine.failing = True

    async def deleted() -> bool:
        try:
            await registry_entry(nats_client, engine_id)
        except KeyNotFoundError:
            return True
        return False

    await poll_until(deleted, what="key deleted after the TTL")
    engine.failing = False
    await poll_until(lambda: registry_entry(nats_client, engine_id), what="registered again")


async def test_ready_only_once_every_engine_answered(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient
) -> None:
    engine = await make_engine()
    engine.failing = True
    agent = await start_agent([engine_entry(engine, new_id(), events=False)], wait_ready=False)
    await poll_until(lambda: _failing(agent, "engines_scraped"), what="started but not ready")

    engine.failing = False
    await poll_until(agent.ready, what="ready")


async def _failing(agent: Any, name: str) -> bool:
    failing: list[str] = await agent.service.probes.failing()
    return failing == [name]


# --- KV events ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", list(WireShape))
async def test_kv_batches_are_republished_in_order(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient, shape: WireShape
) -> None:
    engine, engine_id, kv, _ = await kv_setup(make_engine, start_agent, nats_client, shape=shape)
    for _ in range(3):
        await engine.publish()
    await engine.publish(removed=True)

    batches = await kv.until(lambda items: len(items) >= 5, "5 batches")

    assert summary(batches) == ["R", 0, 1, 2, 3]
    stored = batches[2].events[0]
    assert stored == BlockStored(block_hashes=[1001], parent_block_hash=1000, token_ids=[0, 1, 2, 3], block_size=4)
    assert batches[4].events == [BlockRemoved(block_hashes=[1003])]
    assert (batches[4].dp_rank, batches[4].engine_id, batches[1].ts) == (0, engine_id, 1_795_500_000.0)
    msg_ids = [msg.headers["Nats-Msg-Id"] for msg in kv.msgs]
    assert msg_ids[1].startswith(f"{engine_id}:")
    assert msg_ids[1].endswith(":0")
    assert len(set(msg_ids)) == len(msg_ids)


@pytest.mark.parametrize("topic_frame", [True, False], ids=["vllm-0.32-replay", "legacy-replay"])
async def test_dropped_batch_is_recovered_by_replay(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient, topic_frame: bool
) -> None:
    engine, engine_id, kv, _ = await kv_setup(make_engine, start_agent, nats_client, replay_topic_frame=topic_frame)
    await engine.publish()
    await engine.publish()
    await engine.publish(drop=True)
    await engine.publish(drop=True)
    await engine.publish()

    batches = await kv.until(lambda items: len(items) >= 6, "6 batches")

    assert summary(batches) == ["R", 0, 1, 2, 3, 4]
    assert agent_metric("strata_engineagent_kv_gaps_total", engine_id) == 1
    assert agent_metric("strata_engineagent_kv_replays_total", engine_id, outcome="complete") == 1
    assert agent_metric("strata_engineagent_kv_batches_total", engine_id, outcome="replayed") == 2


async def test_late_join_recovers_earlier_batches_by_replay(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient
) -> None:
    engine = await make_engine()
    for _ in range(3):
        await engine.publish()  # nobody listens yet
    engine_id = new_id()
    await start_agent([engine_entry(engine, engine_id)])
    await engine.wait_subscribed()
    kv = await collect_kv(nats_client, engine_id)
    await engine.publish()

    batches = await kv.until(lambda items: len(items) >= 5, "5 batches")

    assert summary(batches) == ["R", 0, 1, 2, 3]


@pytest.mark.parametrize(
    ("replay", "knobs", "expected"),
    [
        pytest.param(False, {}, ["R", 0, 1, "R", 4, 5], id="no replay endpoint"),
        pytest.param(True, {"replay_mode": "off"}, ["R", 0, 1, "R", 4, 5], id="replay times out"),
        pytest.param(True, {"forget_before": 3}, ["R", 0, 1, "R", 3, 4, 5], id="replay lost the start"),
    ],
)
async def test_unrecoverable_gap_resyncs(
    make_engine: MakeEngine,
    start_agent: StartAgent,
    nats_client: NatsClient,
    replay: bool,
    knobs: dict[str, Any],
    expected: list[Any],
) -> None:
    engine, engine_id, kv, _ = await kv_setup(make_engine, start_agent, nats_client, replay=replay, **knobs)
    await engine.publish()
    await engine.publish()
    await engine.publish(drop=True)
    await engine.publish(drop=True)
    await engine.publish()
    await engine.publish()

    batches = await kv.until(lambda items: len(items) >= len(expected), f"{len(expected)} batches")

    assert summary(batches) == expected
    assert agent_metric("strata_engineagent_kv_resyncs_total", engine_id, reason="gap") == 1


@pytest.mark.parametrize(
    ("reconnect", "reason"),
    [
        pytest.param(False, "restart", id="seq reset on the same connection"),
        pytest.param(True, "first_contact", id="engine restart with a reconnect"),
    ],
)
async def test_engine_restart_resyncs(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient, reconnect: bool, reason: str
) -> None:
    engine, engine_id, kv, _ = await kv_setup(make_engine, start_agent, nats_client)
    for _ in range(3):
        await engine.publish()
    await kv.until(lambda items: len(items) >= 4, "first incarnation")

    if reconnect:
        await engine.restart_events()  # sockets closed and bound again: the agent sees the disconnect
        await engine.wait_subscribed()
    else:
        engine.next_seq = 0  # the publisher restarted, the connection did not drop
        engine.buffer.clear()
    await engine.publish()
    await engine.publish()

    batches = await kv.until(lambda items: len(items) >= 7, "7 batches")
    assert summary(batches) == ["R", 0, 1, 2, "R", 0, 1]
    assert len({msg.headers["Nats-Msg-Id"] for msg in kv.msgs}) == 7  # seq 0 again, but a new epoch
    first_contacts = 2 if reconnect else 1
    assert agent_metric("strata_engineagent_kv_resyncs_total", engine_id, reason="first_contact") == first_contacts
    assert agent_metric("strata_engineagent_kv_resyncs_total", engine_id, reason="restart") == (0 if reconnect else 1)


async def test_undecodable_batch_resyncs_and_is_skipped(
    make_engine: MakeEngine, start_agent: StartAgent, nats_client: NatsClient
) -> None:
    engine, _, kv, _ = await kv_setup(make_engine, start_agent, nats_client)
    await engine.publish()
    await engine.publish(raw=b"\xc1 not msgpack")
    await engine.publish()

    batches = await kv.until(lambda items: len(items) >= 4, "4 batches")

    assert summary(batches) == ["R", 0, "R", 2]
