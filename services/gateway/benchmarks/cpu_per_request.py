"""CPU per request of every process on the gateway path, under a closed-loop load.

    load generator (this process) ──▶ gateway ──▶ constant fake engine (overhead.py's)
                                         └──▶ embedded NATS (registry, usage stream)

Req/s on a small shared box swings from run to run; CPU seconds per request of each
process (from /proc, Linux only) is the steadier measure of what a change saved. To
compare with another revision in one sitting, run it twice, once with that revision's
sources first on PYTHONPATH, e.g. for a worktree at /tmp/old:

    PYTHONPATH=$(ls -d /tmp/old/libs/*/src /tmp/old/services/*/src | tr '\\n' :) \\
        .venv/bin/python services/gateway/benchmarks/cpu_per_request.py
    .venv/bin/python services/gateway/benchmarks/cpu_per_request.py

Run: `.venv/bin/python services/gateway/benchmarks/cpu_per_request.py [--stream] [--duration 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import overhead  # the fake engine, the load loops, the registry heartbeat


async def main(args: argparse.Namespace) -> None:
    async with overhead.gateway_stack("strata-gw-cpu-") as stack:
        url = f"{stack.gateway_url}/v1/chat/completions"
        await overhead.closed_loop(url, args.concurrency, 1, args.stream)  # warm up
        pids = {name: proc.pid for name, proc in stack.procs.items()}
        nats = overhead.pid_with(f"{stack.work}/nats")
        if nats is None:
            raise LookupError("the embedded nats-server is not running")
        pids["nats"] = nats
        before = {name: overhead.cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
        client_before = time.process_time()
        result = await overhead.closed_loop(url, args.concurrency, args.duration, args.stream)
        used = {name: (overhead.cpu_seconds(pid) or 0.0) - before[name] for name, pid in pids.items()}
        used["load generator"] = time.process_time() - client_before
        n = len(result.latencies)
        kind = "stream" if args.stream else "json"
        print(f"[{kind}] {n / result.elapsed:,.0f} req/s at concurrency {args.concurrency}, errors {result.errors}")
        print("  CPU per request: " + ", ".join(f"{name} {s / n * 1e6:,.0f} us" for name, s in used.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", action="store_true", help="SSE instead of JSON")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    asyncio.run(main(parser.parse_args()))
