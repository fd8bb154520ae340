"""The simulated engine: a scheduler driven step by step on a simulated clock.

    generate() ──add──▶ Scheduler.waiting ──schedule()──▶ step work ──latency model──▶ dt
         ▲                                                                      │ sleep dt / time_scale
         └──── per-request queue ◀── TokenOutput ◀── Scheduler.update() ◀───────┘
                                                        └─▶ KV events ─▶ sink (ZMQ publisher)

The clock runs in simulated seconds: while idle it follows wall time x `time_scale`,
and each step advances it by the modelled step time, sleeping until the wall clock
catches up. Timer overshoot is absorbed by the following steps; a host that falls more
than a few milliseconds behind re-anchors the clock (steps stretch instead of piling up). One asyncio task
per engine; many engines share a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from strata_contracts.hashing import VllmBlockHasher
from strata_contracts.messages import HashScheme
from strata_enginesim.domain.blocks import BlockPool
from strata_enginesim.domain.kv_manager import KvManager
from strata_enginesim.domain.latency import LatencyProfile
from strata_enginesim.domain.offload import OffloadTier
from strata_enginesim.domain.scheduler import Scheduler, SchedulerConfig, SeqOutput, SimRequest
from strata_enginesim.domain.types import (
    EngineStats,
    FinishReason,
    GenerateRequest,
    KvEventSink,
    RequestMetrics,
    TokenOutput,
)

__all__ = ["EngineConfig", "SimEngine"]

_log = logging.getLogger(__name__)
_SLACK_S = 0.005  # wall seconds a busy engine may lag its simulated clock before it re-anchors


@dataclass(frozen=True)
class EngineConfig:
    """Everything one simulated engine needs besides its profile."""

    model_name: str
    profile: LatencyProfile
    eos_token_id: int
    output_token_ids: Sequence[int]
    block_size: int | None = None  # default: the profile's
    num_blocks: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    hash_scheme: HashScheme = HashScheme.SHA256
    hash_seed: str | None = None
    time_scale: float = 1.0
    eos_probability: float = 0.0


class SimEngine:
    """One simulated vLLM engine (implements the HTTP layer's EngineCore protocol).

    Args:
        config: engine configuration.
        kv_sink: receives each step's KV events (None = events dropped).
        offload: lower KV tier (None = none).
    """

    def __init__(self, config: EngineConfig, kv_sink: KvEventSink | None = None, offload: OffloadTier | None = None):
        shape = config.profile.engine
        if config.time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {config.time_scale}")
        self.config = config
        self.model_name = config.model_name
        self.block_size = config.block_size or shape.block_size
        self.num_blocks = config.num_blocks or shape.num_blocks
        self.max_model_len = config.max_model_len or shape.max_model_len
        self.stats = EngineStats()
        self._kv_bytes_per_block = shape.kv_bytes_per_token * self.block_size
        self._offload = offload
        on_evict = (lambda h: offload.save(h, self._kv_bytes_per_block)) if offload is not None else None
        pool = BlockPool(self.num_blocks, self.block_size, config.enable_prefix_caching, on_evict)
        hasher = VllmBlockHasher(config.hash_scheme, self.block_size, config.hash_seed)
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=config.max_num_seqs or shape.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens or shape.max_num_batched_tokens,
                max_model_len=self.max_model_len,
                eos_token_id=config.eos_token_id,
                output_token_ids=config.output_token_ids,
                eos_probability=config.eos_probability,
            ),
            KvManager(pool, hasher, offload),
            self.stats,
        )
        self._sink = kv_sink
        self._queues: dict[str, asyncio.Queue[TokenOutput]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._real_base = time.monotonic()
        self._sim_base = 0.0
        self._clock = 0.0
        self.steps = 0

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the step loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"enginesim-{self.model_name}")

    async def stop(self) -> None:
        """Abort everything in flight and stop the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for request in [*self.scheduler.running, *self.scheduler.waiting]:
            self.scheduler.abort(request)
            self._deliver_final(request)

    def now(self) -> float:
        """Current simulated time (s)."""
        return self._sim_base + (time.monotonic() - self._real_base) * self.config.time_scale

    def reset_prefix_cache(self) -> bool:
        """Drop the prefix cache (AllBlocksCleared goes out with the next step); False if busy."""
        done = self.scheduler.kv.pool.reset_prefix_cache()
        if done:
            self._wake.set()
        return done

    # --- requests --------------------------------------------------------------------------------
    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenOutput]:
        """Run `request`; see EngineCore.generate. Closing the iterator aborts it."""
        queue: asyncio.Queue[TokenOutput] = asyncio.Queue()
        if request.request_id in self._queues:
            raise ValueError(f"duplicate request id {request.request_id!r}")
        stamped = dataclasses.replace(request, arrival_time=self.now())
        frontend = self.config.profile.step.frontend_s
        if frontend > 0:
            await asyncio.sleep(frontend / self.config.time_scale)
        sim = self.scheduler.add(stamped)  # RequestRejected propagates before any output
        self._queues[request.request_id] = queue
        self._wake.set()
        try:
            while True:
                output = await queue.get()
                yield output
                if output.finish_reason is not None:
                    return
        finally:
            self._queues.pop(request.request_id, None)
            if sim.finish_reason is None:
                self.scheduler.abort(sim)

    # --- the loop --------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self.scheduler.has_work:
                self._flush_events()
                self._wake.clear()
                await self._wake.wait()
                continue
            # Back-to-back steps keep their simulated spacing even when a sleep overshoots
            # (timers have ~1 ms resolution): the next sleep is shortened to compensate.
            # Only a host that falls further behind (or an idle gap) moves the clock to now.
            now = self.now()
            start = self._clock if now - self._clock <= _SLACK_S * self.config.time_scale else now
            scheduled, work = self.scheduler.schedule(start)
            if not scheduled:  # nothing fits right now; wait for a change
                self._wake.clear()
                await self._wake.wait()
                continue
            dt = self.config.profile.step_time(work)
            if work.loaded_tokens and self._offload is not None:
                dt += self._offload.load_seconds(work.loaded_tokens * self._kv_bytes_per_block // self.block_size)
            end = start + dt
            delay = (end - self.now()) / self.config.time_scale
            if delay > 0:
                await asyncio.sleep(delay)
            self._clock = end
            self.steps += 1
            outputs = self.scheduler.update(scheduled, end)
            self._flush_events()
            for output in outputs:
                self._deliver(output, end)

    def _flush_events(self) -> None:
        events = self.scheduler.kv.pool.take_events()
        if events and self._sink is not None:
            try:
                self._sink.publish_batch(time.time(), events)
            except Exception:  # noqa: BLE001 - a broken event sink must not stop the engine
                _log.exception("KV event sink failed")

    def _deliver(self, output: SeqOutput, now: float) -> None:
        request = output.request
        queue = self._queues.get(request.params.request_id)
        if queue is None:
            return
        queue.put_nowait(
            TokenOutput(
                token_ids=output.new_token_ids,
                finish_reason=request.finish_reason if output.finished else None,
                num_cached_tokens=max(request.num_cached_tokens, 0),
                prompt_tokens=request.num_prompt,
                now=now,
                metrics=_metrics(request, now) if output.finished else None,
            )
        )

    def _deliver_final(self, request: SimRequest) -> None:
        queue = self._queues.get(request.params.request_id)
        if queue is not None:
            queue.put_nowait(
                TokenOutput([], FinishReason.ABORT, max(request.num_cached_tokens, 0), request.num_prompt, self._clock)
            )


def _metrics(request: SimRequest, now: float) -> RequestMetrics:
    arrival = request.params.arrival_time
    scheduled = request.first_scheduled if request.first_scheduled is not None else arrival
    first = request.first_token if request.first_token is not None else now
    return RequestMetrics(
        queue_s=scheduled - arrival,
        ttft_s=first - arrival,
        prefill_s=first - scheduled,
        decode_s=now - first,
        e2e_s=now - arrival,
        inference_s=now - scheduled,
        prompt_tokens=request.num_prompt,
        generation_tokens=len(request.output_ids),
        num_preemptions=request.num_preemptions,
        max_tokens=request.params.max_tokens,
    )
