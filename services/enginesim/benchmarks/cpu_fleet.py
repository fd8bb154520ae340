"""CPU cost of the simulated fleet: N engines in one process under streaming load.

Starts `python -m strata_enginesim --engines N` as its own process, sends Poisson
arrivals of streaming completions spread over the engines from this process, and
reads the simulator's CPU time from /proc before and after the load window. Prints
cores used, CPU per request, and the ratio to the one-core budget (target: < 1.0).

    .venv/bin/python services/enginesim/benchmarks/cpu_fleet.py --engines 8 --rate 50 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.request

import aiohttp

from strata_testing import free_port, wait_until


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _stream(session: aiohttp.ClientSession, url: str, prompt: list[int], max_tokens: int) -> int:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    chunks = 0
    async with session.post(f"{url}/v1/completions", json=body) as response:
        async for line in response.content:
            if line.startswith(b"data: {"):
                chunks += 1
    return chunks


async def _load(urls: list[str], rate: float, duration: float, prompt_len: int, max_tokens: int) -> tuple[int, int]:
    rng = random.Random(0)
    shared = [rng.randrange(4, 8000) for _ in range(prompt_len // 2)]
    tasks = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        start = time.monotonic()
        at = 0.0
        while at < duration:
            delay = start + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            prompt = shared + [rng.randrange(4, 8000) for _ in range(prompt_len - len(shared))]
            tasks.append(asyncio.create_task(_stream(session, rng.choice(urls), prompt, max_tokens)))
            at += rng.expovariate(rate)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    ok = [r for r in results if isinstance(r, int)]
    return len(ok), sum(ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, default=8)
    parser.add_argument("--rate", type=float, default=50.0, help="aggregate requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--profile", default="llama-3.1-8b-h100")
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "STRATA_ENGINESIM_PORT": str(port), "STRATA_ENGINESIM_KV_EVENTS": "true"}
    cmd = [sys.executable, "-m", "strata_enginesim", "--engines", str(args.engines), "--profile", args.profile]
    sim = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: urllib.request.urlopen(f"{base}/readyz").status == 200, timeout=60, what="enginesim ready")
        with urllib.request.urlopen(f"{base}/engines") as response:
            urls = [e["url"] for e in json.loads(response.read())["engines"]]
        idle_cpu, idle_wall = _cpu_seconds(sim.pid), time.monotonic()
        time.sleep(2.0)  # idle baseline: what the fleet costs with no traffic
        idle_cores = (_cpu_seconds(sim.pid) - idle_cpu) / (time.monotonic() - idle_wall)
        cpu0, wall0 = _cpu_seconds(sim.pid), time.monotonic()
        done, chunks = asyncio.run(_load(urls, args.rate, args.duration, args.prompt_len, args.max_tokens))
        cpu, wall = _cpu_seconds(sim.pid) - cpu0, time.monotonic() - wall0
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    cores = cpu / wall
    print(f"engines={args.engines} profile={args.profile} rate={args.rate}/s duration={args.duration}s")
    print(f"requests completed: {done}, streamed chunks: {chunks}, achieved {done / wall:.1f} req/s over {wall:.1f}s")
    print(f"simulator CPU: {cpu:.2f} s -> {cores:.3f} cores (idle baseline {idle_cores:.3f} cores)")
    print(
        f"CPU per request: {cpu / max(done, 1) * 1e3:.2f} ms, per streamed chunk: {cpu / max(chunks, 1) * 1e6:.0f} us"
    )
    print(f"ratio to the 1-core budget: {cores:.2f} ({'within' if cores < 1.0 else 'OVER'} budget)")
    return 0 if cores < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
