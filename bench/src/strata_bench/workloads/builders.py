"""Builders that combine an arrival process with a prompt source into a plan.

Every builder returns ``list[PlannedRequest]`` sorted by ``at_s`` with ``index`` = position.
Randomness is split per concern (arrival times and prompts draw from separate generators
derived from `seed`), so changing the number of requests does not change which prompt a
given arrival gets, and the same seed always gives the same plan.

With ``chat=False`` (default) requests carry ``prompt`` and the exact ``prompt_tokens``;
with ``chat=True`` they carry one user message and ``prompt_tokens`` is left unset (the
server's chat template adds tokens this side cannot count).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from strata_bench.model import PlannedRequest
from strata_bench.tokenizer import BenchTokenizer, text_of_length
from strata_bench.traces.common import TraceRow
from strata_bench.traces.grafana import QpsSeries, per_second_rates
from strata_bench.traces.mooncake import MOONCAKE_BLOCK_SIZE, BlockText, MooncakeRow
from strata_bench.workloads.arrivals import ArrivalKind, ArrivalProcess, arrivals_for_rates
from strata_bench.workloads.prompts import PromptSource, PromptSpec

__all__ = [
    "plan_at_times",
    "plan_constant_rate",
    "plan_from_qps_series",
    "plan_from_trace",
    "plan_pattern",
    "planned_request",
]


def planned_request(
    index: int, at_s: float, spec: PromptSpec, *, chat: bool = False, headers: Mapping[str, str] | None = None
) -> PlannedRequest:
    """The :class:`PlannedRequest` sending `spec` at `at_s` (completion or chat form)."""
    return PlannedRequest(
        index=index,
        at_s=at_s,
        max_tokens=spec.max_tokens,
        prompt=None if chat else spec.text,
        messages=[{"role": "user", "content": spec.text}] if chat else None,
        prompt_tokens=None if chat else spec.prompt_tokens,
        prefix_group=spec.prefix_group,
        headers=dict(headers or {}),
    )


def plan_at_times(
    times_s: Iterable[float],
    source: PromptSource,
    *,
    seed: int = 0,
    chat: bool = False,
    headers: Mapping[str, str] | None = None,
) -> list[PlannedRequest]:
    """One request per time in `times_s` (sorted first), prompts drawn from `source` in time order."""
    rng = random.Random(f"{seed}:prompts")
    return [
        planned_request(i, at_s, source.draw(at_s, rng), chat=chat, headers=headers)
        for i, at_s in enumerate(sorted(times_s))
    ]


def plan_constant_rate(
    source: PromptSource,
    rate: float,
    *,
    num_requests: int | None = None,
    duration_s: float | None = None,
    kind: ArrivalKind = "poisson",
    burstiness: float = 1.0,
    rescale: bool = False,
    seed: int = 0,
    chat: bool = False,
    headers: Mapping[str, str] | None = None,
) -> list[PlannedRequest]:
    """A constant-rate open-loop plan (Poisson by default; gamma with `burstiness`).

    Args:
        source: the prompts.
        rate: mean requests per second.
        num_requests: stop after this many requests.
        duration_s: stop at this time.
        kind: gap distribution (``poisson``, ``gamma``, ``constant``, ``uniform``).
        burstiness: gamma shape (``gamma`` only; 1 = Poisson).
        rescale: stretch so the last arrival is at ``num_requests / rate`` (vLLM).
        seed: seeds arrivals and prompts.
        chat: send chat messages instead of a completion prompt.
        headers: extra HTTP headers for every request.

    Raises:
        ValueError: neither a count nor a duration, or a non-positive rate.
    """
    process = ArrivalProcess(rate, kind, burstiness)
    times = process.times(random.Random(f"{seed}:arrivals"), n=num_requests, duration_s=duration_s, rescale=rescale)
    return plan_at_times(times, source, seed=seed, chat=chat, headers=headers)


def plan_pattern(
    source: PromptSource,
    rates: Sequence[float],
    *,
    step_s: float = 1.0,
    kind: ArrivalKind = "poisson",
    burstiness: float = 1.0,
    seed: int = 0,
    chat: bool = False,
    headers: Mapping[str, str] | None = None,
) -> list[PlannedRequest]:
    """A plan following a rate curve (one rate per `step_s`, e.g. from ``patterns``).

    Arrivals are the non-homogeneous process of `kind`/`burstiness` at the curve's rate;
    the plan covers ``len(rates) * step_s`` seconds.
    """
    rng = random.Random(f"{seed}:arrivals")
    times = arrivals_for_rates(rates, rng, step_s=step_s, kind=kind, burstiness=burstiness)
    return plan_at_times(times, source, seed=seed, chat=chat, headers=headers)


def plan_from_qps_series(
    series: QpsSeries,
    source: PromptSource,
    *,
    qps_scale: float = 1.0,
    max_s: float | None = None,
    kind: ArrivalKind = "poisson",
    burstiness: float = 1.0,
    seed: int = 0,
    chat: bool = False,
    headers: Mapping[str, str] | None = None,
) -> list[PlannedRequest]:
    """A plan replaying a Grafana rate export (AIBrix ``stat``), rates divided by `qps_scale`.

    Unlike AIBrix (Poisson-distributed per-second counts smoothed over 10 s, then
    exponential gaps) the exported mean rate drives the arrival process directly;
    `max_s` keeps only the first seconds.
    """
    rates = per_second_rates(series, qps_scale=qps_scale)
    if max_s is not None:
        rates = rates[: max(0, int(max_s))]
    return plan_pattern(source, rates, kind=kind, burstiness=burstiness, seed=seed, chat=chat, headers=headers)


def plan_from_trace(
    rows: Iterable[TraceRow],
    tokenizer: BenchTokenizer,
    *,
    blocks: BlockText | None = None,
    block_size: int = MOONCAKE_BLOCK_SIZE,
    rebase: bool = True,
    min_input_tokens: int = 1,
    min_output_tokens: int = 1,
    verify: bool = False,
    seed: int = 0,
    chat: bool = False,
    headers: Mapping[str, str] | None = None,
) -> list[PlannedRequest]:
    """Replay trace rows at their times with exact lengths (scale/truncate rows first).

    Rows without prompt text (Azure, BurstGPT) get random text of exactly
    ``input_tokens`` tokens; Mooncake/Bailian rows get their hash-id blocks (equal ids,
    equal text) from `blocks` (or a :class:`BlockText` of `block_size` seeded with
    `seed`). Every row is an independent request: cumulative multi-turn rows already hold
    their history. Output lengths are the trace's (at least `min_output_tokens`; failed
    BurstGPT rows have 0).

    Args:
        rows: trace rows in time order.
        tokenizer: target tokenizer.
        blocks: block text for hash ids (pass one to share its cache across calls).
        block_size: tokens per hash block when `blocks` is None (16 for Bailian).
        rebase: shift times so the first request is at 0.
        min_input_tokens: lower bound on prompt length.
        min_output_tokens: lower bound on output length.
        verify: re-encode hash-id prompts and state the counted length (slow on long
            traces; unnecessary with the simulator's tokenizer, where it is exact).
        seed: seeds the prompt text.
        chat: send chat messages instead of a completion prompt.
        headers: extra HTTP headers for every request.
    """
    rng = random.Random(f"{seed}:prompts")
    plan: list[PlannedRequest] = []
    origin: float | None = None
    for row in rows:
        if origin is None:
            origin = row.at_s if rebase else 0.0
        length = max(min_input_tokens, row.input_tokens)
        output = max(min_output_tokens, row.output_tokens)
        if isinstance(row, MooncakeRow) and row.hash_ids:
            if blocks is None:
                blocks = BlockText(tokenizer, block_size=block_size, seed=seed)
            text = blocks.prompt(row.hash_ids, length)
            tokens = len(tokenizer.encode(text)) if verify else length
        else:
            text, tokens = text_of_length(tokenizer, length, rng), length
        spec = PromptSpec(text, output, tokens)
        plan.append(planned_request(len(plan), row.at_s - origin, spec, chat=chat, headers=headers))
    plan.sort(key=lambda r: r.at_s)
    return [r if r.index == i else replace(r, index=i) for i, r in enumerate(plan)]
