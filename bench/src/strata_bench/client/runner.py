"""Drive a plan against an endpoint: open or closed loop, sessions, warm-up, stop and cancel.

Open loop::

    dispatcher ── sleep until t0+at_s ──▶ spawn unit ── sleep until t0+at_s ──▶ spawn unit …
    (absolute targets: lateness never accumulates; when behind, send at once, the record
    keeps scheduled_s = at_s and sent_s = the real send, so lateness is visible)

A *unit* is one session (its turns, strictly in order, each after the previous answer) or
one request without a session. A later turn is scheduled at
``max(at_s, previous turn's end + think_time_s)``: waiting for the previous answer is the
workload's own dependency, not client lag. Waiting for a ``max_concurrent_sessions`` slot
is client lag and shows as send lag. Closed loop: `concurrency` workers each take the next
unit when their last one finished; ``scheduled_s`` is when the worker was ready.

Stopping: ``max_requests`` / ``duration_s`` stop sending (in-flight requests finish);
``deadline_s`` or :meth:`LoadRunner.stop` (e.g. a SIGINT handler) cancel everything in
flight; those requests are recorded with ``error_type="cancelled"``. All tasks live in one
``TaskGroup``, so nothing outlives :meth:`LoadRunner.run`, even when it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import aiohttp

from strata_bench.client.config import EndpointConfig, LoadConfig
from strata_bench.client.request import base_headers, build_request, execute, resolve_model
from strata_bench.model import Message, PlannedRequest, RequestRecord

__all__ = ["LoadRunner", "RunResult", "StopReason", "group_units"]

StopReason = Literal["complete", "max_requests", "duration", "deadline", "stopped"]


@dataclass
class RunResult:
    """Outcome of :meth:`LoadRunner.run` (warm-up requests are not in `records`).

    Attributes:
        records: one per request sent, sorted by plan index.
        stopped_by: why sending ended.
        planned: requests in the plan; sent: requests actually sent.
        wall_start: ``time.time()`` at the run start ``t0`` (record times are relative to it).
        monotonic_start: ``time.perf_counter()`` at ``t0`` (CLOCK_MONOTONIC: lines records up
            with other processes' monotonic timestamps on the same host).
        elapsed_s: ``t0`` → last request finished.
        warmup_failed: warm-up requests that failed.
        model: the model name used.
    """

    records: list[RequestRecord]
    stopped_by: StopReason
    planned: int
    sent: int
    wall_start: float
    monotonic_start: float
    elapsed_s: float
    warmup_failed: int
    model: str


class _Stop(Exception):
    """Raised by the watcher task to cancel the whole run (deadline or stop())."""


def group_units(plan: Iterable[PlannedRequest]) -> list[list[PlannedRequest]]:
    """Group a plan into units (sessions by ``session_id``, else single requests), each
    sorted by turn, ordered by the first request's ``(at_s, index)``."""
    units: dict[tuple[str, object], list[PlannedRequest]] = {}
    for p in plan:
        key = ("s", p.session_id) if p.session_id is not None else ("r", p.index)
        units.setdefault(key, []).append(p)
    out = [sorted(u, key=lambda p: p.turn) for u in units.values()]
    out.sort(key=lambda u: (u[0].at_s, u[0].index))
    return out


class LoadRunner:
    """Sends a plan to one endpoint over one aiohttp session; one :meth:`run` at a time.

    Args:
        endpoint: where and how to send.
        load: pacing and stop conditions.
        on_record: called (in the event loop) with every finished record, e.g. a progress bar.
    """

    def __init__(
        self,
        endpoint: EndpointConfig,
        load: LoadConfig | None = None,
        *,
        on_record: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.endpoint, self.load, self._on_record = endpoint, load or LoadConfig(), on_record
        self.records: list[RequestRecord] = []
        self._stop_event: asyncio.Event | None = None
        self._stopped_by: StopReason = "complete"
        self._t0 = 0.0
        self._sent = 0
        self._inflight: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Cancel the run: in-flight requests are recorded as cancelled; safe from a signal handler."""
        if self._stop_event is not None:
            self._stop_event.set()

    async def run(self, plan: Sequence[PlannedRequest], warmup: Sequence[PlannedRequest] = ()) -> RunResult:
        """Send `warmup` (records discarded), then `plan`; return when all requests ended.

        Side effects: appends every record to :attr:`records` as it finishes (kept when the
        run is cancelled). Cancelling the calling task cancels every request in flight.
        """
        self.records, self._sent, self._stopped_by = [], 0, "complete"
        self._stop_event = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:
            self._http, self._headers = http, base_headers(self.endpoint)
            self._model = await resolve_model(http, self.endpoint)
            warmup_failed = await self._warmup(warmup)
            self._t0, wall_start = time.perf_counter(), time.time()
            try:
                async with asyncio.TaskGroup() as tg:
                    watcher = tg.create_task(self._watch())
                    units = group_units(plan)
                    if self.load.mode == "open":
                        await self._open_loop(tg, units)
                    else:
                        await self._closed_loop(tg, units)
                    watcher.cancel()
            except* _Stop:
                pass
        records = sorted(self.records, key=lambda r: r.index)
        elapsed = time.perf_counter() - self._t0
        return RunResult(
            records, self._stopped_by, len(plan), self._sent, wall_start, self._t0, elapsed, warmup_failed, self._model
        )

    async def _watch(self) -> None:
        assert self._stop_event is not None
        deadline = self.load.deadline_s
        try:
            async with asyncio.timeout(None if deadline is None else max(0.0, deadline - self._elapsed())):
                await self._stop_event.wait()
            self._stopped_by = "stopped"
        except TimeoutError:
            self._stopped_by = "deadline"
        raise _Stop(self._stopped_by)

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _admit(self, scheduled_s: float) -> bool:
        """May a request scheduled at `scheduled_s` still be sent? Records why not."""
        load = self.load
        if load.max_requests is not None and self._sent >= load.max_requests:
            self._stopped_by = "max_requests"
            return False
        if load.duration_s is not None and scheduled_s >= load.duration_s:
            self._stopped_by = "duration"
            return False
        return True

    async def _sleep_until(self, at_s: float) -> None:
        """Wait until ``t0 + at_s``: a timer up to `spin_s` before, then yield to the loop."""
        target = self._t0 + at_s
        delay = target - time.perf_counter()
        if delay > self.load.spin_s:
            await asyncio.sleep(delay - self.load.spin_s)
        while time.perf_counter() < target:  # noqa: ASYNC110 - a deliberate sub-ms spin
            await asyncio.sleep(0)

    async def _open_loop(self, tg: asyncio.TaskGroup, units: list[list[PlannedRequest]]) -> None:
        cap = self.load.max_concurrent_sessions
        sem = asyncio.Semaphore(cap) if cap else None
        for unit in units:
            if not self._admit(unit[0].at_s):
                break
            await self._sleep_until(unit[0].at_s)
            task = tg.create_task(self._run_unit(unit, sem))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        if self._inflight:
            await asyncio.wait(set(self._inflight))

    async def _closed_loop(self, tg: asyncio.TaskGroup, units: list[list[PlannedRequest]]) -> None:
        shared = iter(units)  # workers share it: each unit is handed out once

        async def worker() -> None:
            for unit in shared:
                if not self._admit(self._elapsed()):
                    return
                await self._run_unit(unit, None)

        await asyncio.wait([tg.create_task(worker()) for _ in range(self.load.concurrency)])

    async def _run_unit(self, unit: list[PlannedRequest], sem: asyncio.Semaphore | None) -> None:
        open_loop = self.load.mode == "open"
        async with sem if sem is not None else contextlib.nullcontext():
            history: list[Message] = []
            prev_end = 0.0
            for i, planned in enumerate(unit):
                if not open_loop:
                    if i and planned.think_time_s > 0:
                        await asyncio.sleep(planned.think_time_s)
                    scheduled = self._elapsed()
                elif i:
                    scheduled = max(planned.at_s, prev_end + planned.think_time_s)
                    await self._sleep_until(scheduled)
                else:
                    scheduled = planned.at_s
                if not self._admit(scheduled if open_loop else self._elapsed()):
                    return
                history = await self._send(planned, scheduled, history)
                prev_end = self._elapsed()

    async def _send(self, planned: PlannedRequest, scheduled: float, history: list[Message]) -> list[Message]:
        """Send one turn; return the session history including this turn and its answer."""
        session = planned.session_id is not None
        rec = RequestRecord(
            index=planned.index,
            scheduled_s=scheduled,
            sent_s=scheduled,
            prompt_tokens=planned.prompt_tokens,
            session_id=planned.session_id,
            turn=planned.turn,
            prefix_group=planned.prefix_group,
        )
        prepared = build_request(self.endpoint, self._model, planned, history if session else [], self._headers)
        self._sent += 1
        try:
            text = await execute(self._http, self.endpoint, prepared, rec, self._t0, keep_text=session)
        finally:
            self.records.append(rec)
            if self._on_record is not None:
                self._on_record(rec)
        return [*prepared.messages, {"role": "assistant", "content": text}] if session else []

    async def _warmup(self, warmup: Sequence[PlannedRequest]) -> int:
        if not warmup:
            return 0
        sem, t0 = asyncio.Semaphore(self.load.warmup_concurrency), time.perf_counter()

        async def one(planned: PlannedRequest) -> bool:
            async with sem:
                rec = RequestRecord(index=planned.index, scheduled_s=0.0, sent_s=0.0)
                prepared = build_request(self.endpoint, self._model, planned, [], self._headers)
                await execute(self._http, self.endpoint, prepared, rec, t0, keep_text=False)
                return rec.error_type is None

        results = await asyncio.gather(*(one(p) for p in warmup))
        return sum(not ok for ok in results)
