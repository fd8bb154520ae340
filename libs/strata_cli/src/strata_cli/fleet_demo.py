"""Traffic through the simulated fleet while watching its load and KV events on NATS."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from nats.aio.msg import Msg

from strata_contracts import subjects
from strata_contracts.messages import BlockStored, EngineLoad, KvEventBatch
from strata_runtime.messaging import Broker
from strata_testing.poll import PollTimeout, poll_until

__all__ = ["FleetReport", "exercise_fleet"]

_SHARED = "You are a helpful assistant for the Strata fleet. Answer briefly and precisely. " * 8


@dataclass
class FleetReport:
    """What the demo saw."""

    requests: list[tuple[str, int, int]] = field(default_factory=list)  # engine url, prompt, cached tokens
    load_messages: Counter[str] = field(default_factory=Counter)
    stored_blocks: Counter[str] = field(default_factory=Counter)
    last_load: dict[str, EngineLoad] = field(default_factory=dict)


async def exercise_fleet(
    nats_url: str, engines: list[dict[str, str]], model: str, timeout_s: float = 10.0
) -> FleetReport:
    """Send two shared-prefix requests per engine and collect load and KV events meanwhile."""
    report = FleetReport()
    broker = await Broker.connect(nats_url, "strata-demo-fleet")

    async def on_load(message: EngineLoad, _: Msg) -> None:
        report.load_messages[message.engine_id] += 1
        report.last_load[message.engine_id] = message

    async def on_kv(message: KvEventBatch, _: Msg) -> None:
        for event in message.events:
            if isinstance(event, BlockStored):
                report.stored_blocks[message.engine_id] += len(event.block_hashes)

    try:
        await broker.subscribe(subjects.ENGINE_LOAD_ALL, EngineLoad, on_load)
        await broker.subscribe(subjects.KV_EVENTS_ALL, KvEventBatch, on_kv)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            for engine in engines:
                for turn in range(2):
                    body = {"model": model, "prompt": _SHARED + f"Question {turn}: what is {turn}?", "max_tokens": 16}
                    async with session.post(f"{engine['url']}/v1/completions", json=body) as response:
                        usage = (await response.json())["usage"]
                    details = usage.get("prompt_tokens_details") or {}
                    report.requests.append(
                        (engine["engine_id"], usage["prompt_tokens"], details.get("cached_tokens") or 0)
                    )
        ids = [engine["engine_id"] for engine in engines]

        async def flowing() -> bool:
            return all(report.load_messages[i] >= 3 and report.stored_blocks[i] > 0 for i in ids)

        with contextlib.suppress(PollTimeout):  # the report shows what did (not) arrive
            await poll_until(flowing, timeout=timeout_s, what="load and KV events from every engine")
    finally:
        await broker.close()
    return report
