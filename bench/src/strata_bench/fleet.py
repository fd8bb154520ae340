"""A simulated engine fleet (``python -m strata_enginesim``) as a child process of a benchmark.

    start_fleet(FleetConfig(engines=4, time_scale=10))
        ──spawn──▶ python -m strata_enginesim   (env STRATA_ENGINESIM_*, service port < 32768)
        ──poll GET /readyz until 200 (deadline; child exit = failure with its log tail)──
        ──GET /engines──▶ Fleet(url, engines=[EngineInfo(id, url)], model)
    Fleet.stop(): SIGTERM ─ wait ─ SIGKILL (idempotent; ``with simulated_fleet(...)`` always calls it)

The child's stdout and stderr go to a log file (a temporary one unless `log_path` is given),
never to a pipe, so a chatty fleet cannot block on a full pipe buffer. KV events are off
unless asked for: nothing in a benchmark reads them and publishing costs CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "EngineInfo",
    "Fleet",
    "FleetConfig",
    "FleetError",
    "engine_request_counts",
    "pick_port",
    "simulated_fleet",
    "start_fleet",
]

_POLL_S = 0.05
_FINISHED_METRIC = "vllm:e2e_request_latency_seconds_count"
_LOG_TAIL_CHARS = 2000
_START_ATTEMPTS = 3


class FleetError(RuntimeError):
    """The fleet did not start (the message names why and carries the child's log tail)."""


def pick_port(host: str = "127.0.0.1", *, low: int = 20000, high: int = 32000) -> int:
    """A free TCP port in ``[low, high)``: below Linux's ephemeral range (32768+), so a port
    we pick is not taken meanwhile by some outgoing connection (the peer routers' docs ask
    for ports below 32768 for the same reason).

    Raises:
        FleetError: no free port after 200 random tries.
    """
    for _ in range(200):
        port = random.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise FleetError(f"no free port in [{low}, {high}) on {host}")


@dataclass(frozen=True)
class FleetConfig:
    """What to start.

    Attributes:
        engines: simulated engines (one process, one HTTP port each).
        profile: latency profile: a shipped name or a YAML path.
        time_scale: simulated seconds per wall-clock second.
        prefix_caching: vLLM automatic prefix caching on the engines.
        num_blocks: KV blocks per engine (None: the profile's).
        block_size: KV block size (None: the profile's).
        model: served model name.
        kv_events: publish ZMQ KV events (off: benchmarks do not read them).
        extra_env: further ``STRATA_ENGINESIM_*`` settings (e.g. ``MAX_NUM_SEQS``), names
            without the prefix.
        host: interface to bind.
        ready_timeout_s: deadline for ``/readyz``.
        stop_timeout_s: SIGTERM grace before SIGKILL.
    """

    engines: int = 2
    profile: str = "tiny-cpu"
    time_scale: float = 1.0
    prefix_caching: bool = True
    num_blocks: int | None = None
    block_size: int | None = None
    model: str = "tiny"
    kv_events: bool = False
    extra_env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    ready_timeout_s: float = 30.0
    stop_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.engines < 1 or self.time_scale <= 0:
            raise ValueError(f"FleetConfig needs engines >= 1 and time_scale > 0: {self}")

    def env(self, port: int) -> dict[str, str]:
        """The ``STRATA_ENGINESIM_*`` environment of the child serving on `port`."""
        values: dict[str, object] = {
            "PORT": port,
            "HOST": self.host,
            "ENGINES": self.engines,
            "PROFILE": self.profile,
            "TIME_SCALE": self.time_scale,
            "ENABLE_PREFIX_CACHING": str(self.prefix_caching).lower(),
            "SERVED_MODEL_NAME": self.model,
            "KV_EVENTS": str(self.kv_events).lower(),
            "SHUTDOWN_GRACE_S": min(self.stop_timeout_s / 2, 2.0),
            "LOG_LEVEL": "WARNING",
            "NUM_BLOCKS": self.num_blocks,
            "BLOCK_SIZE": self.block_size,
            **self.extra_env,
        }
        return {f"STRATA_ENGINESIM_{k.upper()}": str(v) for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class EngineInfo:
    """One engine of a running fleet."""

    engine_id: str
    url: str


@dataclass
class Fleet:
    """A running fleet; owns the child process until :meth:`stop`.

    Attributes:
        url: the service root (``/readyz``, ``/engines``, ``/metrics``).
        engines: the engines, in id order.
        model: the served model name.
        config: how it was started.
        log_path: the child's combined stdout/stderr.
    """

    url: str
    engines: list[EngineInfo]
    model: str
    config: FleetConfig
    log_path: Path
    process: subprocess.Popen[bytes]
    _temp_log: bool = False

    @property
    def engine_urls(self) -> list[str]:
        """Base URLs of the engines."""
        return [e.url for e in self.engines]

    def stop(self) -> int | None:
        """SIGTERM, wait up to ``stop_timeout_s``, then SIGKILL; return the exit code.

        Idempotent; the temporary log file (if any) is removed.
        """
        proc = self.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.config.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._temp_log:
            self.log_path.unlink(missing_ok=True)
        return proc.returncode


def _inherited_env() -> dict[str, str]:
    """This process's environment without ``STRATA_ENGINESIM_*``: the fleet is exactly its config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STRATA_ENGINESIM_")}


def _get_json(url: str, timeout: float = 2.0) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = json.loads(response.read())
    if not isinstance(data, dict):
        raise FleetError(f"{url}: expected a JSON object")
    return data


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
    except OSError:
        return ""


def _wait_ready(proc: subprocess.Popen[bytes], url: str, deadline: float, log_path: Path) -> None:
    while True:
        if proc.poll() is not None:
            raise FleetError(f"enginesim exited with code {proc.returncode} before ready; log:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise FleetError(f"enginesim not ready at {url}/readyz in time; log:\n{_log_tail(log_path)}")
        time.sleep(_POLL_S)


def start_fleet(config: FleetConfig, *, log_path: str | Path | None = None) -> Fleet:
    """Start the fleet and wait until every engine serves; the caller must :meth:`Fleet.stop` it.

    Side effects: spawns ``python -m strata_enginesim`` (same interpreter) in its own
    process group, writing its log to `log_path` (default: a temporary file).

    Raises:
        FleetError: the child exited or ``/readyz`` did not answer 200 within
            ``ready_timeout_s`` (the child is stopped first). A port taken between
            picking and binding is retried with another port.
    """
    for attempt in range(_START_ATTEMPTS):
        try:
            return _start_once(config, log_path)
        except FleetError as exc:
            if "in use" not in str(exc) or attempt == _START_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _start_once(config: FleetConfig, log_path: str | Path | None) -> Fleet:
    temp = log_path is None
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="strata-enginesim-", suffix=".log")
        os.close(handle)
        log_path = name
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    port = pick_port(config.host)
    url = f"http://{config.host}:{port}"
    with open(path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "strata_enginesim"],
            env={**_inherited_env(), **config.env(port)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it
        )
    fleet = Fleet(url, [], config.model, config, path, proc, temp)
    try:
        _wait_ready(proc, url, time.monotonic() + config.ready_timeout_s, path)
        listing = _get_json(f"{url}/engines")
        raw = listing.get("engines")
        if not isinstance(raw, list) or len(raw) != config.engines:
            raise FleetError(f"{url}/engines listed {raw!r}, expected {config.engines} engines")
        fleet.engines = [EngineInfo(str(e["engine_id"]), str(e["url"])) for e in raw]
        fleet.model = str(listing.get("model", config.model))
    except BaseException:
        fleet.stop()
        raise
    return fleet


@contextlib.contextmanager
def simulated_fleet(config: FleetConfig, *, log_path: str | Path | None = None) -> Iterator[Fleet]:
    """``with simulated_fleet(cfg) as fleet:`` start, yield, and always stop the fleet."""
    fleet = start_fleet(config, log_path=log_path)
    try:
        yield fleet
    finally:
        fleet.stop()


def engine_request_counts(engines: list[EngineInfo]) -> dict[str, int]:
    """Requests each engine finished so far (its ``vllm:e2e_request_latency_seconds_count``):
    where a router sent the traffic, seen from the engines. An engine that does not answer
    counts -1."""
    counts: dict[str, int] = {}
    for engine in engines:
        try:
            with urllib.request.urlopen(f"{engine.url}/metrics", timeout=2.0) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            counts[engine.engine_id] = -1
            continue
        total = 0.0
        for line in text.splitlines():
            if line.startswith(_FINISHED_METRIC):
                total += float(line.rsplit(" ", 1)[1])
        counts[engine.engine_id] = int(total)
    return counts
