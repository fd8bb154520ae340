"""Send one plan to a target: engines the client spreads over itself, or one endpoint.

    plan (simulated s) ─÷ time_scale─▶ units ─strategy─▶ engine 0: LoadRunner ┐
                                                      ─▶ engine 1: LoadRunner ├─ gather ─▶ records
                                                      ─▶ …                    ┘   (× time_scale, one clock)

Client-side strategies assign whole *units* (a request, or every turn of a session: its
history lives in this client) to engines: ``random`` (seeded) or ``round-robin`` (in
arrival order). One :class:`LoadRunner` per engine runs concurrently; their clocks start
within microseconds of each other and are aligned on their recorded wall starts, so the
merged records share one time origin. An ``endpoint`` target (a gateway or a peer router)
gets the whole plan through one runner, with an optional ``routing-strategy`` header.

Times: plans, durations and the returned records are in **simulated** seconds; only what
goes on the wire is divided by `time_scale`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import aiohttp

from strata_bench.client import EndpointConfig, LoadConfig, LoadRunner, RunResult, group_units
from strata_bench.client.request import resolve_model
from strata_bench.model import PlannedRequest, RequestRecord

__all__ = ["Outcome", "PlanSender", "SendOptions", "Target", "assign_units", "fetch_model"]

Spread = Literal["random", "round-robin"]
_EPSILON_S = 1e-6


@dataclass(frozen=True)
class Target:
    """Where a run sends.

    Attributes:
        kind: ``random`` / ``round-robin`` (client spreads over `urls`) or ``endpoint``
            (one URL: a gateway or router).
        urls: engine base URLs, or the single endpoint.
        names: engine names stamped on records (client spreading only; default: URLs).
        routing_strategy: ``routing-strategy`` header for an endpoint.
    """

    kind: Literal["random", "round-robin", "endpoint"]
    urls: tuple[str, ...]
    names: tuple[str, ...] = ()
    routing_strategy: str | None = None

    def __post_init__(self) -> None:
        if not self.urls or (self.kind == "endpoint" and len(self.urls) != 1):
            raise ValueError(f"target {self.kind} needs {'one URL' if self.kind == 'endpoint' else 'URLs'}")
        if self.names and len(self.names) != len(self.urls):
            raise ValueError("Target.names must match Target.urls")


@dataclass(frozen=True)
class SendOptions:
    """How a plan is sent (all times in simulated seconds).

    Attributes:
        model: model name (None: asked once from the first URL).
        api: ``chat`` or ``completions``.
        time_scale: simulated seconds per wall second of the target.
        duration_s: send nothing scheduled after this time.
        deadline_s: cancel whatever is still in flight at this time.
        timeout_s: per-request limit.
        seed: seeds the ``random`` spread.
        warmup_concurrency: parallel warm-up requests.
        api_key: sent as a bearer token (a gateway with authentication).
    """

    model: str | None = None
    api: Literal["chat", "completions"] = "completions"
    time_scale: float = 1.0
    duration_s: float | None = None
    deadline_s: float | None = None
    timeout_s: float = 600.0
    seed: int = 0
    warmup_concurrency: int = 4
    api_key: str | None = None


@dataclass(frozen=True)
class Outcome:
    """Result of one run: merged records (simulated seconds) and how it ended."""

    records: list[RequestRecord]
    stopped_by: str
    planned: int
    sent: int
    elapsed_wall_s: float
    warmup_failed: int
    model: str


def assign_units(units: Sequence[Sequence[PlannedRequest]], n: int, kind: Spread, seed: int = 0) -> list[int]:
    """Engine index of every unit (in the given order)."""
    if kind == "round-robin":
        return [i % n for i in range(len(units))]
    rng = random.Random(f"{seed}:spread")
    return [rng.randrange(n) for _ in units]


async def fetch_model(url: str) -> str:
    """The first model ``GET <url>/v1/models`` lists."""
    async with aiohttp.ClientSession() as http:
        return await resolve_model(http, EndpointConfig(url))


def _to_wall(plan: Sequence[PlannedRequest], k: float) -> list[PlannedRequest]:
    if k == 1.0:
        return list(plan)
    return [replace(p, at_s=p.at_s / k, think_time_s=p.think_time_s / k) for p in plan]


def _to_sim(rec: RequestRecord, offset: float, k: float, engine: str | None) -> RequestRecord:
    def t(x: float) -> float:
        return (x + offset) * k

    rec.scheduled_s, rec.sent_s = t(rec.scheduled_s), t(rec.sent_s)
    rec.first_token_s = None if rec.first_token_s is None else t(rec.first_token_s)
    rec.end_s = None if rec.end_s is None else t(rec.end_s)
    rec.token_times_s = [t(x) for x in rec.token_times_s]
    if engine is not None:
        rec.engine = engine
    return rec


class PlanSender:
    """Sends plans to targets; :meth:`stop` cancels whatever is running (signal-safe)."""

    def __init__(self) -> None:
        self._runners: list[LoadRunner] = []
        self.stopped = False

    def stop(self) -> None:
        """Cancel every run in flight (their records are kept, marked cancelled)."""
        self.stopped = True
        for runner in self._runners:
            runner.stop()

    async def send(
        self,
        target: Target,
        plan: Sequence[PlannedRequest],
        options: SendOptions,
        *,
        warmup: Sequence[PlannedRequest] = (),
    ) -> Outcome:
        """Send `warmup` (unmeasured, closed loop, spread like the plan), then `plan`."""
        k = options.time_scale
        model = options.model or await fetch_model(target.urls[0])
        warmup_failed = 0
        if warmup:
            closed = LoadConfig(mode="closed", concurrency=options.warmup_concurrency)
            done = await self._spread(target, _to_wall(warmup, k), options, model, closed)
            warmup_failed = sum(r.error_type is not None for r in done[0])
        load = LoadConfig(
            mode="open",
            # inclusive end: a rescaled plan puts its last arrival exactly at the duration
            duration_s=None if options.duration_s is None else options.duration_s / k + _EPSILON_S,
            deadline_s=None if options.deadline_s is None else options.deadline_s / k,
        )
        records, results = await self._spread(target, _to_wall(plan, k), options, model, load)
        stopped = next((r.stopped_by for r in results if r.stopped_by != "complete"), "complete")
        elapsed = max((r.elapsed_s for r in results), default=0.0)
        sent = sum(r.sent for r in results)
        return Outcome(records, stopped, len(plan), sent, elapsed, warmup_failed, model)

    async def _spread(
        self, target: Target, plan: list[PlannedRequest], options: SendOptions, model: str, load: LoadConfig
    ) -> tuple[list[RequestRecord], list[RunResult]]:
        if target.kind == "endpoint":
            parts = [plan]
        else:
            units = group_units(plan)
            where = assign_units(units, len(target.urls), target.kind, options.seed)
            parts = [
                [p for u, e in zip(units, where, strict=True) if e == i for p in u] for i in range(len(target.urls))
            ]
        runners = [
            LoadRunner(
                EndpointConfig(
                    url,
                    model=model,
                    api=options.api,
                    routing_strategy=target.routing_strategy,
                    timeout_s=options.timeout_s / options.time_scale,
                    api_key=options.api_key,
                ),
                load,
            )
            for url in target.urls
        ]
        self._runners = runners
        if self.stopped:
            return [], []
        try:
            results = await asyncio.gather(*(r.run(part) for r, part in zip(runners, parts, strict=True)))
        finally:
            self._runners = []
        origin = min(r.wall_start for r in results)
        names = target.names or target.urls
        records = [
            _to_sim(rec, r.wall_start - origin, options.time_scale, None if target.kind == "endpoint" else names[i])
            for i, r in enumerate(results)
            for rec in r.records
        ]
        records.sort(key=lambda rec: rec.index)
        return records, list(results)
