"""Peer routers (``sglang-router``, ``vllm-router`` from PyPI) in front of the simulated fleet.

Each peer lives in its own virtualenv outside the clone, created on first use and reused::

    ~/.cache/strata/peers-<name>-<hash>/      hash = sha256(pinned requirement, python x.y, machine)
        .complete                              JSON {requirement, version, install_s}; written last
    (creation is serialised by ~/.cache/strata/peers-<name>-<hash>.lock; a half-built venv is rebuilt)

:func:`run_peers` starts one fleet per target (cold caches for everyone), sends the same plan
directly (the client spreading requests randomly over the engines: the baseline) and
through each router, and returns one comparison table. A peer that cannot be installed or
started is reported with the reason; the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from strata_bench.cli import Subparsers

from strata_bench.fleet import Fleet, FleetError, pick_port
from strata_bench.scenarios.build import prepare_dataset
from strata_bench.scenarios.contenders import Contender, ContenderRun, contenders_report, run_contenders
from strata_bench.scenarios.loader import load_scenario
from strata_bench.scenarios.targets import Target

__all__ = [
    "PEERS",
    "PeerError",
    "PeerInstall",
    "PeerSpec",
    "add_peers",
    "ensure_peer_venv",
    "peer_cache_dir",
    "peer_contender",
    "peer_venv_dir",
    "router_command",
    "run_peers",
    "running_router",
]

_TAIL = 1500


class PeerError(RuntimeError):
    """A peer could not be installed or started (the message says exactly why)."""


@dataclass(frozen=True)
class PeerSpec:
    """A peer router: where it comes from and how it is launched.

    Attributes:
        name: short name (also the venv name and the table column).
        requirement: pinned pip requirement.
        executable: console script installed in the venv's ``bin``.
        subcommand: words after the executable (``launch`` for sglang-router).
        log_level: value of ``--log-level`` (the two routers spell it differently).
    """

    name: str
    requirement: str
    executable: str
    subcommand: tuple[str, ...] = ()
    log_level: str = "warning"


PEERS: dict[str, PeerSpec] = {
    "sglang-router": PeerSpec("sglang-router", "sglang-router==0.3.2", "sglang-router", ("launch",), "warn"),
    "vllm-router": PeerSpec("vllm-router", "vllm-router==0.1.17", "vllm-router", (), "warning"),
}
"""The peers ``strata-bench peers`` knows (versions verified in docs/reference/routing.md §13)."""


def peer_cache_dir() -> Path:
    """``$STRATA_CACHE_DIR``, else ``$XDG_CACHE_HOME/strata``, else ``~/.cache/strata``."""
    explicit = os.environ.get("STRATA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "strata"


def peer_venv_dir(spec: PeerSpec, cache_dir: Path | None = None) -> Path:
    """The venv path of `spec`: changes when the pin, the Python minor version or the
    machine type changes, so a stale venv is never reused."""
    key = f"{spec.requirement}\n{sys.version_info.major}.{sys.version_info.minor}\n{platform.machine()}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (cache_dir or peer_cache_dir()) / f"peers-{spec.name}-{digest}"


@dataclass(frozen=True)
class PeerInstall:
    """A ready peer venv.

    Attributes:
        venv: its directory.
        version: the installed distribution's version.
        install_s: seconds the creation took (when it was created).
        created: whether this call created it (False: reused from the cache).
    """

    venv: Path
    version: str
    install_s: float
    created: bool

    def executable(self, spec: PeerSpec) -> Path:
        """Path of the router's console script."""
        return self.venv / "bin" / spec.executable


def _run(cmd: Sequence[str], what: str, timeout_s: float) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"{what}: no result within {timeout_s:.0f} s") from exc
    except OSError as exc:
        raise PeerError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-_TAIL:]
        raise PeerError(f"{what} failed (exit {done.returncode}): {tail}")
    return done.stdout


def ensure_peer_venv(spec: PeerSpec, *, cache_dir: Path | None = None, timeout_s: float = 900.0) -> PeerInstall:
    """The peer's venv, created (``python -m venv`` + ``pip install <pin>``) if missing.

    Side effects: may create the venv (network, minutes); holds a lock file meanwhile.

    Raises:
        PeerError: venv creation or installation failed (pip's message included).
    """
    venv = peer_venv_dir(spec, cache_dir)
    marker = venv / ".complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            info = json.loads(marker.read_text())
            return PeerInstall(venv, str(info["version"]), float(info["install_s"]), created=False)
        shutil.rmtree(venv, ignore_errors=True)
        started = time.perf_counter()
        _run([sys.executable, "-m", "venv", str(venv)], f"creating the {spec.name} venv", 120)
        python = str(venv / "bin" / "python")
        _run([python, "-m", "pip", "install", "-q", spec.requirement], f"pip install {spec.requirement}", timeout_s)
        dist = spec.requirement.split("==")[0]
        version = _run(
            [python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"], "reading the version", 60
        ).strip()
        install_s = time.perf_counter() - started
        info = {"requirement": spec.requirement, "version": version, "install_s": round(install_s, 1)}
        marker.write_text(json.dumps(info))
        return PeerInstall(venv, version, install_s, created=True)


def router_command(
    spec: PeerSpec,
    executable: str | Path,
    worker_urls: Sequence[str],
    *,
    port: int,
    prometheus_port: int,
    policy: str = "cache_aware",
    host: str = "127.0.0.1",
) -> list[str]:
    """The launch command of `spec` (docs/reference/routing.md §13).

    The Prometheus port is always explicit: both routers default to 29000 and
    sglang-router panics when it is taken.
    """
    if not worker_urls:
        raise ValueError("a router needs at least one worker URL")
    return [
        str(executable),
        *spec.subcommand,
        "--host",
        host,
        "--port",
        str(port),
        "--worker-urls",
        *worker_urls,
        "--policy",
        policy,
        "--prometheus-host",
        host,
        "--prometheus-port",
        str(prometheus_port),
        "--log-level",
        spec.log_level,
    ]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # it speaks HTTP: started (workers may still be probed)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_router(
    spec: PeerSpec,
    install: PeerInstall,
    worker_urls: Sequence[str],
    *,
    policy: str = "cache_aware",
    log_path: Path,
    ready_timeout_s: float = 60.0,
) -> Iterator[str]:
    """Start the router in front of `worker_urls`; yield its base URL; always stop it.

    Readiness: ``GET /health`` answers (any HTTP status) before the deadline.

    Raises:
        PeerError: it exited or never answered (its log tail included).
    """
    port, prom = pick_port(), pick_port()
    cmd = router_command(spec, install.executable(spec), worker_urls, port=port, prometheus_port=prom, policy=policy)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not _answers(f"{url}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with code {proc.returncode}" if proc.poll() is not None else "never answered"
                tail = log_path.read_text(errors="replace")[-_TAIL:]
                raise PeerError(f"{spec.name} {state} on {url}; log:\n{tail}")
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def peer_contender(name: str, policy: str = "cache_aware") -> Contender:
    """A contender that installs (once) and starts peer `name` in front of the fleet."""
    spec = PEERS[name]

    def connect(fleet: Fleet, run_dir: Path, stack: contextlib.ExitStack, run: ContenderRun) -> Target:
        install = ensure_peer_venv(spec)
        how = "installed now" if install.created else "cached venv, install took"
        started = time.perf_counter()
        log_path = run_dir / "router.log"
        url = stack.enter_context(running_router(spec, install, fleet.engine_urls, policy=policy, log_path=log_path))
        run.label = f"{name} {install.version} {policy}"
        run.notes = (
            f"{how} {install.install_s:.0f} s; answered /health {time.perf_counter() - started:.1f} s after launch"
        )
        return Target("endpoint", (url,))

    return Contender(name, name, connect=connect)


def run_peers(
    out_dir: Path = Path(".strata/bench"),
    *,
    peers: Sequence[str] = tuple(PEERS),
    policy: str = "cache_aware",
    qps: float = 8.0,
    time_scale: float = 2.0,
    log: Callable[[str], None] = print,
) -> tuple[Path, list[ContenderRun], str]:
    """Send the ``routing-compare`` trace (point `qps`, chat API) directly to the engines
    (client random spread: the baseline) and through each peer, a fresh fleet each.

    Returns the result directory, the runs and the report text (also in ``peers.md``).
    A peer that cannot be installed or started is reported; the others still run.
    """
    s = load_scenario("routing-compare").scenario
    s = s.model_copy(
        update={
            "workload": s.workload.model_copy(update={"qps": [qps], "api": "chat"}),
            "fleet": s.fleet.model_copy(update={"time_scale": time_scale}),
        }
    )
    out = out_dir / f"peers-{time.strftime('%Y%m%d-%H%M%S')}"
    log(f"peers: routing-compare trace at {qps:g} req/s (chat), {s.fleet.engines} engines, time scale {time_scale:g}")
    contenders = [Contender("direct", "direct (client random)"), *(peer_contender(n, policy) for n in peers)]
    dataset = prepare_dataset(s.dataset)
    runs = run_contenders(s, dataset, qps, contenders, out, tolerate=(PeerError, FleetError, OSError), log=log)
    text = f"Latencies in simulated ms; time scale {time_scale:g} (router overhead counts x{time_scale:g}).\n\n"
    text += contenders_report(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.md").write_text(text + "\n")
    return out, runs, text


def add_peers(sub: Subparsers) -> None:
    """Register ``peers`` (one line in :data:`strata_bench.cli.COMMANDS`)."""
    p = sub.add_parser("peers", help="the same trace direct and through sglang-router / vllm-router (from PyPI)")
    p.add_argument("--peer", action="append", choices=sorted(PEERS), help="peer to run (repeatable; default: all)")
    p.add_argument("--policy", default="cache_aware", help="the routers' --policy")
    p.add_argument("--qps", type=float, default=8.0, help="request rate (simulated req/s)")
    p.add_argument("--time-scale", type=float, default=2.0, help="simulated seconds per wall second")
    p.add_argument("--out", type=Path, default=Path(".strata/bench"), help="parent of the result directory")
    p.set_defaults(func=_cmd_peers)


def _cmd_peers(args: argparse.Namespace) -> int:
    peers = args.peer or tuple(PEERS)
    out, runs, text = run_peers(args.out, peers=peers, policy=args.policy, qps=args.qps, time_scale=args.time_scale)
    print(f"\n{text}\n\nreport: {out / 'peers.md'}")
    return 0 if all(r.summary is not None for r in runs) else 1
