"""`strata`: run a local cluster and the demo.

strata up [--state-dir DIR]     start NATS, PostgreSQL and every installed service; Ctrl-C stops all
strata status [--state-dir DIR] show what a running `strata up` started and whether it is ready
strata down [--state-dir DIR]   stop a running `strata up` (SIGTERM; it drains and cleans up)
strata demo [--state-dir DIR]   start the cluster, check readiness, round-trip every contract, stop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from strata_cli.cluster import Component, LocalCluster, StartupError, probe_ready, read_state
from strata_cli.fleet_demo import exercise_fleet
from strata_cli.roundtrip import round_trip_all
from strata_testing.poll import PollTimeout, wait_until

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `strata` command; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] in (["keys"], ["tenants"]):
        from strata_gateway.admin import main as admin

        return admin(args_list, prog="strata")
    parser = argparse.ArgumentParser(prog="strata", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "start a local cluster (foreground; Ctrl-C stops it)"),
        ("status", "show the running local cluster"),
        ("down", "stop the running local cluster"),
        ("demo", "start, verify and stop a local cluster"),
    ):
        # `keys` and `tenants` are dispatched to the gateway's admin tool above.
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--state-dir", type=Path, default=Path(os.environ.get("STRATA_HOME", ".strata")))
        if name in ("up", "demo"):
            cmd.add_argument("--engines", type=int, default=4, help="simulated engines to start (default 4)")
    sub.add_parser("keys", help="manage API keys (strata keys --help)")
    sub.add_parser("tenants", help="manage tenants (strata tenants --help)")
    args = parser.parse_args(args_list)
    if args.command in ("up", "demo"):
        return {"up": _up, "demo": _demo}[args.command](args.state_dir, args.engines)
    return {"status": _status, "down": _down}[args.command](args.state_dir)


def _say(text: str) -> None:
    print(text, flush=True)


def _print_components(components: Sequence[Component]) -> None:
    for c in components:
        extra = f" ({c.source})" if c.source else f" pid {c.pid}, log {c.log}"
        _say(f"  {c.name:<12} {c.url}{extra}")


def _start(state_dir: Path, engines: int) -> LocalCluster | None:
    if read_state(state_dir) is not None:
        _say(f"a cluster is already running from {state_dir} (strata down first)")
        return None
    cluster = LocalCluster(state_dir, service_env={"enginesim": {"STRATA_ENGINESIM_ENGINES": str(engines)}})
    try:
        components = cluster.start()
    except (StartupError, RuntimeError, OSError) as exc:
        _say(f"start-up failed: {exc}")
        return None
    _say("NATS up, PostgreSQL up" + ("" if len(components) > 2 else "; no Strata services installed yet"))
    for c in components:
        if c.kind == "service":
            _say(f"  {c.name} ready")
    _print_components(components)
    return cluster


def _up(state_dir: Path, engines: int) -> int:
    cluster = _start(state_dir, engines)
    if cluster is None:
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    _say("cluster running; Ctrl-C (or `strata down`) stops it")
    while not stop.wait(0.5):
        died = {name: code for name, code in cluster.exit_codes().items() if code is not None}
        if died:
            _say(f"service exited unexpectedly: {died}")
            break
    _say("stopping ...")
    cluster.stop()
    _say("stopped cleanly")
    return 0 if stop.is_set() else 1


def _status(state_dir: Path) -> int:
    state = read_state(state_dir)
    if state is None:
        _say(f"no cluster running from {state_dir}")
        return 1
    components = [Component(**raw) for raw in state["components"]]  # type: ignore[attr-defined]
    _say(f"cluster (strata up pid {state['pid']}):")
    for c in components:
        status = ("ready" if probe_ready(c.url) else "NOT READY") if c.kind == "service" else "up"
        _say(f"  {c.name:<12} {status:<9} {c.url}")
    return 0


def _down(state_dir: Path) -> int:
    state = read_state(state_dir)
    if state is None:
        _say(f"no cluster running from {state_dir}")
        return 1
    pid = int(str(state["pid"]))
    try:
        os.kill(pid, signal.SIGTERM)
        # `strata up` removes the state file as the last step of a clean stop.
        wait_until(
            lambda: read_state(state_dir) is None or not _alive(pid), timeout=60, what=f"strata up (pid {pid}) stop"
        )
    except ProcessLookupError:
        (state_dir / "cluster.json").unlink(missing_ok=True)
        _say("stale state removed (strata up was not running)")
        return 0
    except PollTimeout:
        _say(f"strata up (pid {pid}) did not stop within 60 s")
        return 1
    _say("cluster stopped")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _demo(state_dir: Path, engines: int) -> int:
    cluster = _start(state_dir, engines)
    if cluster is None:
        return 1
    try:
        fleet_ok = _demo_fleet(cluster) and _demo_gateway(cluster)
        results = asyncio.run(round_trip_all(cluster.nats_url))
        _say("\ncontract round trip over NATS:")
        _say(f"  {'channel':<36} {'transport':<9} {'message':<20} {'bytes':>5} {'ms':>6}  result")
        for r in results:
            _say(
                f"  {r.channel.name:<36} {r.channel.transport.value:<9} {r.channel.message.__name__:<20} "
                f"{r.size:>5} {r.millis:>6.1f}  {'ok' if r.ok else 'FAILED'}"
            )
        ok = all(r.ok for r in results) and fleet_ok
        _say(f"\n{sum(r.ok for r in results)}/{len(results)} contracts round-tripped")
    finally:
        cluster.stop()
    codes = cluster.exit_codes()
    _say("clean shutdown" if all(code in (0, None) for code in codes.values()) else f"unclean shutdown: {codes}")
    return 0 if ok else 1


def _demo_gateway(cluster: LocalCluster) -> bool:
    """Requests through the gateway with a new key; their usage rows in PostgreSQL."""
    gateway = next((c for c in cluster.components if c.name == "gateway"), None)
    if gateway is None:
        return True
    from strata_cli.gateway_demo import run_gateway_demo

    report = run_gateway_demo(gateway.url, cluster.database_url, "tiny")
    _say(f"\nthrough the gateway ({gateway.url}, tenant demo, a new API key):")
    for r in report.responses:
        _say(f"  {r['status']} {r['request_id']} engine={r['engine']} strategy={r['strategy']} {r['shape']}")
    error = report.unauthorized.get("error", {})
    _say(f"  bad key -> {report.unauthorized.get('status')} {error}")
    _say(f"  usage ledger: {report.ledger_rows}/{len(report.responses)} rows in PostgreSQL")
    return report.ledger_rows == len(report.responses) and all(r["status"] == 200 for r in report.responses)


def _demo_fleet(cluster: LocalCluster) -> bool:
    """Requests through the simulated engines; load and KV events observed on NATS."""
    sim = next((c for c in cluster.components if c.name == "enginesim"), None)
    if sim is None:
        return True
    with urllib.request.urlopen(f"{sim.url}/engines", timeout=5) as response:  # noqa: S310 - our own URL
        listing = json.loads(response.read())
    report = asyncio.run(exercise_fleet(cluster.nats_url, listing["engines"], listing["model"]))
    _say("\nrequests to the simulated engines (two per engine, shared prefix):")
    for engine_id, prompt, cached in report.requests:
        _say(f"  {engine_id:<8} prompt_tokens={prompt:<5} cached_tokens={cached}")
    _say("\nseen on NATS:")
    ok = True
    for engine in listing["engines"]:
        engine_id = engine["engine_id"]
        load = report.last_load.get(engine_id)
        loads, stored = report.load_messages[engine_id], report.stored_blocks[engine_id]
        ok = ok and loads > 0 and stored > 0
        detail = f"kv_usage={load.kv_usage:.3f} gen_tps={load.generation_tps:.0f}" if load else "no load message"
        _say(f"  {engine_id:<8} {loads:>3} load messages ({detail}), {stored} blocks stored via KV events")
    return ok


if __name__ == "__main__":
    sys.exit(main())
