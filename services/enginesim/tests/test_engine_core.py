"""The simulated engine's KV manager and scheduler behave like vLLM v1's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from strata_contracts.hashing import BlockHash, VllmBlockHasher, external_hash
from strata_contracts.messages import HashScheme
from strata_contracts.vllm_kv_events import VllmBlockRemoved, VllmBlockStored, VllmKvEvent
from strata_enginesim.domain.latency import load_profile
from strata_enginesim.domain.types import FinishReason, GenerateRequest, RequestRejected, TokenOutput
from strata_enginesim.engine import EngineConfig, SimEngine

BLOCK = 16


class ListSink:
    def __init__(self) -> None:
        self.batches: list[list[VllmKvEvent]] = []

    def publish_batch(self, ts: float, events: Sequence[VllmKvEvent]) -> None:
        self.batches.append(list(events))

    def of(self, kind: type) -> list[VllmKvEvent]:
        return [e for batch in self.batches for e in batch if isinstance(e, kind)]


def make_engine(num_blocks: int = 64, sink: ListSink | None = None, **kw: object) -> SimEngine:
    config = EngineConfig(
        model_name="tiny",
        profile=load_profile("tiny-cpu"),
        eos_token_id=2,
        output_token_ids=list(range(300, 400)),
        block_size=BLOCK,
        num_blocks=num_blocks,
        time_scale=1000.0,  # simulated time runs 1000x faster than the wall clock
        **kw,  # type: ignore[arg-type]
    )
    return SimEngine(config, kv_sink=sink)


async def run(
    engine: SimEngine, prompt: list[int], max_tokens: int = 4, rid: str = "r", **kw: object
) -> list[TokenOutput]:
    request = GenerateRequest(request_id=rid, prompt_token_ids=prompt, max_tokens=max_tokens, ignore_eos=True, **kw)  # type: ignore[arg-type]
    return [output async for output in engine.generate(request)]


def assert_no_leaks(engine: SimEngine) -> None:
    pool = engine.scheduler.kv.pool
    assert all(block.ref_cnt == 0 for block in pool.blocks)
    assert pool.num_free == pool.num_blocks
    assert not engine.scheduler.running
    assert not engine.scheduler.waiting


@pytest.fixture
async def sink_engine() -> tuple[SimEngine, ListSink]:
    sink = ListSink()
    engine = make_engine(sink=sink)
    engine.start()
    yield engine, sink
    await engine.stop()


async def test_repeated_prompt_reports_shared_full_blocks_as_cached(sink_engine: tuple[SimEngine, ListSink]) -> None:
    engine, _ = sink_engine
    prompt = list(range(1000, 1000 + 5 * BLOCK + 3))  # 5 full blocks + 3 tokens
    first = await run(engine, prompt, rid="a")
    second = await run(engine, prompt, rid="b")
    assert first[-1].num_cached_tokens == 0
    assert second[-1].num_cached_tokens == 5 * BLOCK
    assert [len(o.token_ids) for o in first] == [1, 1, 1, 1]
    assert first[-1].finish_reason is FinishReason.LENGTH
    assert engine.stats.prefix_cache_hits == 5 * BLOCK
    assert engine.stats.prefix_cache_queries == 2 * len(prompt)
    assert_no_leaks(engine)


async def test_fully_cached_prompt_still_recomputes_its_last_block(sink_engine: tuple[SimEngine, ListSink]) -> None:
    engine, _ = sink_engine
    prompt = list(range(4 * BLOCK))  # exactly 4 blocks: the hit is capped below the last token
    await run(engine, prompt, rid="a")
    second = await run(engine, prompt, rid="b")
    assert second[-1].num_cached_tokens == 3 * BLOCK


async def test_block_stored_events_match_vllm_hashes(sink_engine: tuple[SimEngine, ListSink]) -> None:
    engine, sink = sink_engine
    prompt = list(range(50, 50 + 3 * BLOCK + 5))
    await run(engine, prompt, max_tokens=2)
    stored = sink.of(VllmBlockStored)
    expected = VllmBlockHasher(HashScheme.SHA256, BLOCK).hash_prompt(prompt)
    assert stored[0].block_hashes == [external_hash(h) for h in expected]
    assert stored[0].parent_block_hash is None
    assert stored[0].token_ids == prompt[: 3 * BLOCK]
    # a longer prompt sharing the prefix stores only its new blocks, chained to the shared one
    longer = prompt[: 3 * BLOCK] + list(range(900, 900 + 2 * BLOCK))
    await run(engine, longer, max_tokens=1, rid="longer")
    new = sink.of(VllmBlockStored)[-1]
    assert new.parent_block_hash == external_hash(expected[2])
    assert len(new.block_hashes) == 2  # 5 full blocks: 3 hit, 2 computed and stored


async def test_kv_pressure_evicts_lru_blocks_and_emits_block_removed() -> None:
    sink = ListSink()
    engine = make_engine(num_blocks=8, sink=sink)
    engine.start()
    try:
        for i in range(4):  # each prompt 3 full blocks + output: fills and recycles the 8-block pool
            await run(engine, [i * 1000 + t for t in range(3 * BLOCK)], max_tokens=2, rid=f"r{i}")
        removed = sink.of(VllmBlockRemoved)
        assert removed, "evictions must be announced"
        stored = {h for e in sink.of(VllmBlockStored) for h in e.block_hashes}
        assert {h for e in removed for h in e.block_hashes} <= stored
        first_prompt_hashes = sink.of(VllmBlockStored)[0].block_hashes
        # vLLM frees a request's blocks tail first: the tail of the oldest prompt goes first
        assert removed[0].block_hashes == [first_prompt_hashes[-1]]
        assert_no_leaks(engine)
    finally:
        await engine.stop()


async def test_preemption_by_recompute_when_blocks_run_out() -> None:
    engine = make_engine(num_blocks=6)
    engine.start()
    try:
        # two requests of 2 prompt blocks growing to 3 blocks each need 6+ blocks with the
        # partial ones: the newest is preempted, recomputed, and both still finish
        prompts = [[k * 1000 + t for t in range(2 * BLOCK)] for k in range(3)]
        results = await asyncio.gather(
            *(run(engine, p, max_tokens=BLOCK + 4, rid=f"p{k}") for k, p in enumerate(prompts))
        )
        assert all(r[-1].finish_reason is FinishReason.LENGTH for r in results)
        assert all(sum(len(o.token_ids) for o in r) == BLOCK + 4 for r in results)
        assert engine.stats.num_preemptions > 0
        assert any(r[-1].metrics and r[-1].metrics.num_preemptions for r in results)
        assert_no_leaks(engine)
    finally:
        await engine.stop()


async def test_abort_frees_blocks(sink_engine: tuple[SimEngine, ListSink]) -> None:
    engine, _ = sink_engine
    stream = engine.generate(GenerateRequest("x", list(range(40)), max_tokens=500, ignore_eos=True))
    await anext(stream)
    await stream.aclose()
    assert_no_leaks(engine)


async def test_too_long_prompt_rejected_with_vllm_message(sink_engine: tuple[SimEngine, ListSink]) -> None:
    engine, _ = sink_engine
    with pytest.raises(RequestRejected, match=r"maximum context length is 4096 tokens\. However, you requested 4100"):
        await run(engine, list(range(4000)), max_tokens=100)


async def test_cache_salt_separates_prefixes(sink_engine: tuple[SimEngine, ListSink]) -> None:
    engine, _ = sink_engine
    prompt = list(range(3 * BLOCK + 1))
    await run(engine, prompt, rid="a", cache_salt="t1")
    assert (await run(engine, prompt, rid="b", cache_salt="t2"))[-1].num_cached_tokens == 0
    assert (await run(engine, prompt, rid="c", cache_salt="t1"))[-1].num_cached_tokens == 3 * BLOCK


async def test_prefix_caching_off_never_hits() -> None:
    engine = make_engine(enable_prefix_caching=False)
    engine.start()
    try:
        prompt = list(range(3 * BLOCK + 1))
        await run(engine, prompt, rid="a")
        assert (await run(engine, prompt, rid="b"))[-1].num_cached_tokens == 0
    finally:
        await engine.stop()


class FakeTier:
    """Keeps every evicted block; loads cost 1 ms per MiB."""

    def __init__(self) -> None:
        self.saved: dict[BlockHash, int] = {}
        self.loaded_bytes = 0

    def save(self, block_hash: BlockHash, nbytes: int) -> None:
        self.saved[block_hash] = nbytes

    def lookup(self, hashes: Sequence[BlockHash]) -> int:
        count = 0
        for block_hash in hashes:
            if block_hash not in self.saved:
                break
            count += 1
        return count

    def load_seconds(self, nbytes: int) -> float:
        self.loaded_bytes += nbytes
        return nbytes / 2**20 * 1e-3


async def test_offload_seam_saves_evicted_blocks_and_loads_missing_prefixes() -> None:
    tier = FakeTier()
    config = EngineConfig(
        model_name="tiny",
        profile=load_profile("tiny-cpu"),
        eos_token_id=2,
        output_token_ids=[5],
        block_size=BLOCK,
        num_blocks=8,
        time_scale=1000.0,
    )
    engine = SimEngine(config, offload=tier)
    engine.start()
    try:
        victim = list(range(3 * BLOCK + 1))
        await run(engine, victim, max_tokens=1, rid="victim")
        for i in range(3):  # push the victim's blocks out of the GPU pool
            await run(engine, [5000 + i * 100 + t for t in range(3 * BLOCK + 1)], max_tokens=1, rid=f"f{i}")
        assert len(tier.saved) >= 3
        again = await run(engine, victim, max_tokens=1, rid="again")
        assert again[-1].num_cached_tokens == 3 * BLOCK  # served by the tier
        assert engine.stats.external_hits == 3 * BLOCK
        assert engine.stats.external_queries >= engine.stats.external_hits
        assert tier.loaded_bytes == 3 * BLOCK * load_profile("tiny-cpu").engine.kv_bytes_per_token
        assert_no_leaks(engine)
    finally:
        await engine.stop()


@pytest.mark.parametrize("name", ["tiny-cpu", "llama-3.1-8b-a100", "llama-3.1-8b-h100", "llama-3-70b-a100-tp4"])
def test_shipped_profiles_load_and_order_sensibly(name: str) -> None:
    from strata_enginesim.domain.latency import StepWork

    profile = load_profile(name)
    decode = profile.step_time(StepWork(decode_seqs=1, context_tokens=1000))
    prefill = profile.step_time(StepWork(prefill_tokens=1000, context_tokens=1000, attention_pairs=1000 * 500))
    busy = profile.step_time(StepWork(decode_seqs=64, context_tokens=64 * 1000))
    assert 0 < decode < prefill
    assert decode <= busy
    assert profile.sources


def test_unknown_profile_lists_the_shipped_ones() -> None:
    with pytest.raises(ValueError, match=r"shipped: .*tiny-cpu"):
        load_profile("nope")
