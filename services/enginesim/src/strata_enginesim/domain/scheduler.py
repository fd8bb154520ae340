"""Continuous batching with chunked prefill, prefix caching and preemption (vLLM v1 style).

Each :meth:`Scheduler.schedule` builds one step under two budgets, `max_num_batched_tokens`
and `max_num_seqs`:

1. running requests first, in order: a decode gets 1 token, an unfinished prefill its
   next chunk. When blocks run out, the newest running request is preempted (blocks
   freed, progress dropped, back to the front of the waiting queue: recompute) until
   the current one fits, or it is itself the one preempted;
2. then, if nobody was preempted, waiting requests in FCFS order: prefix-cache hit
   lookup, then as many prompt tokens as the budget allows (chunked prefill). A waiting
   request that does not fit stops admission (head-of-line, like vLLM).

:meth:`Scheduler.update` then advances the step: computed tokens move forward, each
request whose prompt is fully computed samples one token, finished requests free
their blocks. Nothing here sleeps or does I/O; the engine loop owns time.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from strata_enginesim.domain.kv_manager import KvManager, SeqState
from strata_enginesim.domain.latency import StepWork
from strata_enginesim.domain.types import EngineStats, FinishReason, GenerateRequest, RequestRejected

__all__ = ["Scheduled", "Scheduler", "SchedulerConfig", "SeqOutput", "SimRequest"]


@dataclass(frozen=True)
class SchedulerConfig:
    """Engine limits (vLLM's scheduler config)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    eos_token_id: int
    output_token_ids: Sequence[int]
    eos_probability: float = 0.0  # chance per generated token (after min_tokens) of EOS


@dataclass
class SimRequest:
    """A request inside the engine."""

    params: GenerateRequest
    seq: SeqState
    rng: random.Random
    num_prompt: int
    num_computed: int = 0
    output_ids: list[int] = field(default_factory=list)
    num_cached_tokens: int = -1  # set at first schedule
    num_preemptions: int = 0
    first_scheduled: float | None = None
    first_token: float | None = None
    finish_reason: FinishReason | None = None

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return len(self.seq.token_ids)


@dataclass(frozen=True)
class Scheduled:
    """One request's share of a step."""

    request: SimRequest
    num_new_tokens: int


@dataclass(frozen=True)
class SeqOutput:
    """What a step produced for one request."""

    request: SimRequest
    new_token_ids: list[int]
    finished: bool


class Scheduler:
    """Waiting queue, running list and the KV manager of one engine.

    Args:
        config: limits and sampling parameters.
        kv: the KV manager (owned).
        stats: counters updated as requests move (shared with /metrics).
    """

    def __init__(self, config: SchedulerConfig, kv: KvManager, stats: EngineStats) -> None:
        self.config = config
        self.kv = kv
        self.stats = stats
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []

    # --- admission and removal ------------------------------------------------------------------
    def add(self, params: GenerateRequest) -> SimRequest:
        """Queue a request; raises RequestRejected if it can never fit."""
        prompt = len(params.prompt_token_ids)
        if prompt == 0:
            raise RequestRejected("The prompt cannot be empty.")
        if prompt + params.max_tokens > self.config.max_model_len:
            raise RequestRejected(
                f"This model's maximum context length is {self.config.max_model_len} tokens. However, you "
                f"requested {prompt + params.max_tokens} tokens ({prompt} in the messages, "
                f"{params.max_tokens} in the completion). Please reduce the length of the messages or completion."
            )
        max_blocks = -(-(prompt + params.max_tokens) // self.kv.block_size)
        if max_blocks > self.kv.pool.num_blocks:
            raise RequestRejected(
                f"The request needs {max_blocks} KV blocks; the engine has {self.kv.pool.num_blocks}."
            )
        seed = params.seed if params.seed is not None else zlib.crc32(params.request_id.encode())
        seq = SeqState(params.request_id, list(params.prompt_token_ids), params.cache_salt)
        request = SimRequest(params, seq, random.Random(seed), num_prompt=prompt)
        self.waiting.append(request)
        self._refresh_gauges()
        return request

    def abort(self, request: SimRequest) -> None:
        """Drop a request wherever it is and free its blocks (idempotent)."""
        if request in self.running:
            self.running.remove(request)
            self.kv.free(request.seq)
        elif request in self.waiting:
            self.waiting.remove(request)
            self.kv.free(request.seq)
        if request.finish_reason is None:
            request.finish_reason = FinishReason.ABORT
        self._refresh_gauges()

    @property
    def has_work(self) -> bool:
        """Whether any request is waiting or running."""
        return bool(self.waiting or self.running)

    # --- one step --------------------------------------------------------------------------------
    def schedule(self, now: float) -> tuple[list[Scheduled], StepWork]:
        """Pick this step's requests and token counts (allocates their KV slots)."""
        budget = self.config.max_num_batched_tokens
        loaded_blocks = 0
        scheduled: list[Scheduled] = []
        preempted = False
        index = 0
        while index < len(self.running) and budget > 0:
            request = self.running[index]
            num_new = min(request.num_tokens - request.num_computed, budget)
            if num_new <= 0:
                index += 1
                continue
            while not self.kv.allocate_slots(request.seq, request.num_computed, num_new):
                victim = self.running.pop()
                self._preempt(victim)
                preempted = True
                if victim is request:
                    break
            else:
                scheduled.append(Scheduled(request, num_new))
                budget -= num_new
                index += 1
                continue
            break
        while not preempted and self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            hits = self.kv.computed_blocks(request.seq)
            external = self.kv.external_blocks(request.seq, len(hits)) if request.num_cached_tokens < 0 else 0
            num_computed = (len(hits) + external) * self.kv.block_size
            num_new = min(request.num_tokens - num_computed, budget)
            if not self.kv.allocate_slots(request.seq, num_computed, num_new, hits):
                break
            self.waiting.popleft()
            self.running.append(request)
            request.num_computed = num_computed
            if request.num_cached_tokens < 0:
                request.num_cached_tokens = num_computed
                request.first_scheduled = now
                self.stats.prefix_cache_queries += request.num_tokens
                self.stats.prefix_cache_hits += len(hits) * self.kv.block_size
                if self.kv.offload is not None:
                    self.stats.external_queries += request.num_tokens - len(hits) * self.kv.block_size
                self.stats.external_hits += external * self.kv.block_size
                loaded_blocks += external
            scheduled.append(Scheduled(request, num_new))
            budget -= num_new
        self._refresh_gauges()
        return scheduled, self._work(scheduled, loaded_blocks)

    def _work(self, scheduled: list[Scheduled], loaded_blocks: int) -> StepWork:
        prefill = decode = context = 0
        pairs = 0.0
        for item in scheduled:
            before = item.request.num_computed
            if item.num_new_tokens == 1 and before >= item.request.num_prompt:
                decode += 1
            else:
                prefill += item.num_new_tokens
            context += before + item.num_new_tokens
            pairs += item.num_new_tokens * (before + item.num_new_tokens / 2)
        return StepWork(
            prefill_tokens=prefill,
            decode_seqs=decode,
            context_tokens=context,
            attention_pairs=pairs,
            loaded_tokens=loaded_blocks * self.kv.block_size,
            num_seqs=len(scheduled),
        )

    def update(self, scheduled: list[Scheduled], now: float) -> list[SeqOutput]:
        """Apply a finished step: advance, sample, finish, free. Returns per-request outputs."""
        outputs: list[SeqOutput] = []
        for item in scheduled:
            request = item.request
            if request.finish_reason is not None:  # aborted while the step ran
                continue
            request.num_computed += item.num_new_tokens
            self.kv.cache_blocks(request.seq, request.num_computed)
            if request.num_computed < request.num_tokens:
                continue  # prompt chunk, no token yet
            token = self._sample(request)
            request.output_ids.append(token)
            request.seq.token_ids.append(token)
            self.stats.generation_tokens += 1
            if request.first_token is None:
                request.first_token = now
                self.stats.prompt_tokens += request.num_prompt
            finished = self._check_stop(request, token)
            if finished:
                self.running.remove(request)
                self.kv.free(request.seq)
                reason = str(request.finish_reason)
                self.stats.request_success[reason] = self.stats.request_success.get(reason, 0) + 1
            outputs.append(SeqOutput(request, [token], finished))
        self._refresh_gauges()
        return outputs

    def _sample(self, request: SimRequest) -> int:
        params = request.params
        produced = len(request.output_ids)
        if (
            not params.ignore_eos
            and produced + 1 >= params.min_tokens
            and self.config.eos_probability > 0
            and request.rng.random() < self.config.eos_probability
        ):
            return self.config.eos_token_id
        return request.rng.choice(self.config.output_token_ids)

    def _check_stop(self, request: SimRequest, token: int) -> bool:
        if token == self.config.eos_token_id and not request.params.ignore_eos:
            request.finish_reason = FinishReason.STOP
        elif len(request.output_ids) >= request.params.max_tokens:
            request.finish_reason = FinishReason.LENGTH
        return request.finish_reason is not None

    def _preempt(self, request: SimRequest) -> None:
        self.kv.free(request.seq)
        request.num_computed = 0
        request.num_preemptions += 1
        self.stats.num_preemptions += 1
        self.waiting.appendleft(request)

    def _refresh_gauges(self) -> None:
        self.stats.num_running = len(self.running)
        self.stats.num_waiting = len(self.waiting)
        self.stats.kv_cache_usage = self.kv.pool.usage()
