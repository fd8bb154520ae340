"""Gateway overhead: latency it adds over talking to the engine directly, and its max req/s.

    load generator ──direct──────────────────────────▶ fast fake engine (own process)
    load generator ──▶ gateway (python -m strata_gateway) ──▶ same engine
                          │ embedded NATS: registry, no router (local picks), JetStream usage records
    load generator ──▶ sglang-router / vllm-router (pass-through: round_robin, one worker) ──▶ same engine
    load generator ──▶ bare_relay.py (the floor of any Python relay; JSON only) ──▶ same engine

The engine answers every request at once with a constant short body (or a 4-chunk SSE
stream), so the gateway is the bottleneck. Open-loop runs send at a fixed rate and time
each request from its *scheduled* send time (no coordinated omission); the added latency
is gateway minus direct at the same percentile, measured in the same run. The closed-loop
run keeps `--concurrency` requests in flight for `--duration` seconds and reports req/s,
and for the processes this script started, their CPU time per request.

Run: `.venv/bin/python services/gateway/benchmarks/overhead.py [--rates 200 500] [--duration 10]`.
Every process shares this machine's cores (printed), which bounds the max req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from strata_contracts import subjects
from strata_contracts.messages import EngineRegistration, HashScheme, encode
from strata_runtime import Broker
from strata_runtime.plane import ensure_event_plane
from strata_testing import EmbeddedNats, free_port, poll_until

MODEL = "bench"
USAGE = {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": 0}}
REPLY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok ok ok ok"}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
)
CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'
USAGE_CHUNK = b"data: " + orjson.dumps({"id": "c", "choices": [], "usage": USAGE}) + b"\n\n"


# --- the fast fake engine (run as a child process: `overhead.py --engine PORT`) ----------------------
async def _engine_handler(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.Response(body=REPLY, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    await response.write(CHUNK * 4 + (USAGE_CHUNK if (body.get("stream_options") or {}).get("include_usage") else b""))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _health(_: web.Request) -> web.Response:
    return web.Response()


async def _models(_: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "vllm"}]})


def run_engine(port: int) -> None:
    """Serve the constant engine on 127.0.0.1:`port` until killed."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _engine_handler)
    app.router.add_get("/health", _health)  # peers' routers probe it before serving
    app.router.add_get("/v1/models", _models)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- load -----------------------------------------------------------------------------------------------
@dataclass
class Result:
    latencies: list[float]
    errors: int
    elapsed: float

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def _body(stream: bool) -> bytes:
    return orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 4,
                         "stream": stream})  # fmt: skip


async def _one(session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        await response.read()
        return response.status == 200


async def open_loop(url: str, rate: float, duration: float, stream: bool) -> Result:
    """Send at `rate` req/s for `duration` s; latency from each request's scheduled time."""
    body, latencies, errors = _body(stream), [], 0
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fire(scheduled: float) -> None:
            nonlocal errors
            try:
                ok = await _one(session, url, body)
            except aiohttp.ClientError:
                ok = False
            latencies.append(time.perf_counter() - scheduled)
            errors += not ok

        start, tasks = time.perf_counter(), []
        for i in range(int(rate * duration)):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(scheduled)))
        await asyncio.gather(*tasks)
    return Result(latencies, errors, time.perf_counter() - start)


async def closed_loop(url: str, concurrency: int, duration: float, stream: bool) -> Result:
    """Keep `concurrency` requests in flight for `duration` s."""
    body, latencies, errors = _body(stream), [], 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                ok = await _one(session, url, body)
                latencies.append(time.perf_counter() - sent)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(latencies, errors, time.perf_counter() - start)


# --- the setup ------------------------------------------------------------------------------------------
FLOOR = "python floor"
"""Target name of bare_relay.py (a reference, not a peer: no gateway or router features)."""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (None where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_with(marker: str) -> int | None:
    """The pid of a process whose command line (NUL-separated arguments) contains `marker`."""
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    return int(entry.name)
            except OSError:
                continue
    return None


def pid_listening(port: int) -> int | None:
    """The pid of the process listening on TCP `port` (from /proc; None when not found).

    The peer routers rename their processes (`vllm::router`), so their command lines
    cannot tell them apart; their listening sockets can.
    """
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[1].endswith(f":{port:04X}"):  # 0A: LISTEN
                    sockets.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir() if sockets else ():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) in sockets for fd in (entry / "fd").iterdir()):
                    return int(entry.name)
    return None


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _ready(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status in (200, 405)
    except aiohttp.ClientError:
        return False


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def _heartbeat(broker: Broker, engine_url: str, stop: asyncio.Event) -> None:
    kv = await broker.kv(subjects.ENGINE_REGISTRY_BUCKET)
    while not stop.is_set():
        registration = EngineRegistration(
            engine_id="bench-0", url=engine_url, model=MODEL, max_model_len=4096, block_size=16,  # type: ignore[arg-type]
            hash_scheme=HashScheme.SHA256, agent_id="bench", heartbeat_ts=time.time(),
        )  # fmt: skip
        await kv.put("bench-0", encode(registration))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5)


@dataclass
class Stack:
    """What :func:`gateway_stack` started: NATS, the constant engine, a gateway in front of it."""

    work: Path
    env: dict[str, str]
    engine_port: int
    gateway_url: str
    procs: dict[str, subprocess.Popen[bytes]]

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.engine_port}"

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start another process (log `<name>.log`, extra `env`, stopped with the stack)."""
        self.procs[name] = _spawn(args, {**self.env, **(env or {})}, self.work / f"{name}.log")
        return self.procs[name]


@contextlib.asynccontextmanager
async def gateway_stack(prefix: str) -> AsyncIterator[Stack]:
    """Embedded NATS, the engine (registered, heartbeating) and a gateway with auth off, all ready.

    Yields the stack; every process it started is stopped on exit.
    """
    work = Path(tempfile.mkdtemp(prefix=prefix))
    with EmbeddedNats(work / "nats") as nats_url:
        broker = await Broker.connect(nats_url, "bench")
        await ensure_event_plane(broker)
        gateway_port = free_port()
        stack = Stack(
            work, {**os.environ, "STRATA_NATS_URL": nats_url}, free_port(), f"http://127.0.0.1:{gateway_port}", {}
        )
        stack.spawn("engine", [sys.executable, __file__, "--engine", str(stack.engine_port)])
        stop = asyncio.Event()
        beat = asyncio.create_task(_heartbeat(broker, stack.engine_url, stop))
        gateway_env = {
            "STRATA_GATEWAY_PORT": str(gateway_port),
            "STRATA_GATEWAY_AUTH_ENABLED": "false",
            "STRATA_GATEWAY_LOG_LEVEL": "WARNING",
            "STRATA_GATEWAY_USAGE_SPOOL_DIR": str(work / "spool"),
        }
        stack.spawn("gateway", [sys.executable, "-m", "strata_gateway"], gateway_env)
        try:
            await poll_until(lambda: _ready(f"{stack.engine_url}/v1/chat/completions"), timeout=30, what="engine")
            await poll_until(lambda: _ready(f"{stack.gateway_url}/readyz"), timeout=30, what="gateway")
            yield stack
        finally:
            stop.set()
            await beat
            for proc in stack.procs.values():
                proc.terminate()
                proc.wait(timeout=30)
            await broker.close()
    print(f"logs: {work}")


async def main(args: argparse.Namespace) -> None:
    async with gateway_stack("strata-gw-bench-") as stack:
        floor_port = free_port()
        relay = [
            sys.executable,
            str(Path(__file__).with_name("bare_relay.py")),
            str(floor_port),
            str(stack.engine_port),
        ]
        stack.spawn("floor", relay)
        await poll_until(lambda: _listening(floor_port), timeout=30, what="bare relay")  # it answers POSTs only
        pids = {"gateway": stack.procs["gateway"].pid, FLOOR: stack.procs["floor"].pid}
        with contextlib.ExitStack() as peers:
            targets = {"gateway": f"{stack.gateway_url}/v1/chat/completions"}
            peer_urls = _start_peers(args.peers, stack.engine_url, stack.work, peers)
            targets |= peer_urls
            pids |= _peer_pids(peer_urls)
            targets[FLOOR] = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
            await report(args, f"{stack.engine_url}/v1/chat/completions", targets, pids)


def _start_peers(names: list[str], engine_url: str, work: Path, stack: contextlib.ExitStack) -> dict[str, str]:
    """Start each peer router (own venv, round_robin = pass-through) in front of the engine."""
    from strata_bench.peers import PEERS, PeerError, ensure_peer_venv, running_router

    urls = {}
    for name in names:
        spec = PEERS[name]
        try:
            install = ensure_peer_venv(spec)
            url = stack.enter_context(
                running_router(spec, install, [engine_url], policy="round_robin", log_path=work / f"{name}.log")
            )
        except PeerError as exc:
            print(f"{name}: not run: {exc}")
            continue
        urls[f"{name} {install.version}"] = f"{url}/v1/chat/completions"
    return urls


def _peer_pids(targets: dict[str, str]) -> dict[str, int]:
    """The pids of the peer routers among `targets` (found by their --port argument)."""
    pids = {}
    for name, url in targets.items():
        pid = pid_listening(int(url.split(":")[2].split("/")[0]))
        if pid is not None:
            pids[name] = pid
    return pids


async def report(args: argparse.Namespace, direct: str, every: dict[str, str], pids: dict[str, int]) -> None:
    """Added latency and max req/s of every target (gateway, peers, floor) against the direct path, one run."""
    print(f"cores: {os.cpu_count()} (engine, gateway, peers, NATS and this load generator share them)")
    for url in (direct, *every.values()):  # warm up every path (connections, caches)
        await open_loop(url, 100, 2, stream=False)
    width = max(len(name) for name in every)
    for stream in (False, True) if args.stream else (False,):
        targets = {name: url for name, url in every.items() if not (stream and name == FLOOR)}
        kind = "stream" if stream else "json"
        print(f"\n[{kind}] open loop, {args.duration:.0f} s per run; latency in ms from the scheduled send time")
        print(f"{'target':<{width}} {'rate':>6} {'direct p50':>11} {'p99':>8} {'p50':>8} {'p99':>8} "
              f"{'added p50':>10} {'added p99':>10} {'errors':>7}")  # fmt: skip
        for rate in args.rates:
            d = await open_loop(direct, rate, args.duration, stream)
            for name, url in targets.items():
                g = await open_loop(url, rate, args.duration, stream)
                print(f"{name:<{width}} {rate:>6} {d.pct(0.5):>11.2f} {d.pct(0.99):>8.2f} {g.pct(0.5):>8.2f} "
                      f"{g.pct(0.99):>8.2f} {g.pct(0.5) - d.pct(0.5):>10.2f} {g.pct(0.99) - d.pct(0.99):>10.2f} "
                      f"{d.errors + g.errors:>7}")  # fmt: skip
        d = await closed_loop(direct, args.concurrency, args.duration, stream)
        d_rps = len(d.latencies) / d.elapsed
        print(f"[{kind}] max req/s at concurrency {args.concurrency}: direct {d_rps:,.0f}")
        best_peer = 0.0
        gateway_rps = 0.0
        for name, url in targets.items():
            pid = pids.get(name)
            before = cpu_seconds(pid) if pid else None
            g = await closed_loop(url, args.concurrency, args.duration, stream)
            after = cpu_seconds(pid) if pid else None
            rps = len(g.latencies) / g.elapsed
            gateway_rps = rps if name == "gateway" else gateway_rps
            best_peer = best_peer if name in ("gateway", FLOOR) else max(best_peer, rps)
            cpu = ""
            if before is not None and after is not None and g.latencies:
                cpu = f", its CPU {(after - before) / len(g.latencies) * 1e6:,.0f} us/req"
            print(f"  {name:<{width}} {rps:>8,.0f} req/s ({rps / d_rps:.2f} of direct), errors {g.errors}{cpu}")
        if best_peer:
            print(f"[{kind}] gateway / best peer max req/s: {gateway_rps / best_peer:.2f}")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[200, 500], help="open-loop rates (req/s)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop requests in flight")
    parser.add_argument("--no-stream", dest="stream", action="store_false", help="skip the SSE runs")
    parser.add_argument(
        "--peers", nargs="*", default=["sglang-router", "vllm-router"], help="peer routers to run alongside"
    )
    parser.add_argument("--engine", type=int, help=argparse.SUPPRESS)  # child mode: serve the fake engine
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _parse(sys.argv[1:])
    if arguments.engine:
        run_engine(arguments.engine)
    else:
        asyncio.run(main(arguments))
