"""A local Strata cluster: NATS, PostgreSQL and every installed service as child processes.

    strata up ──▶ NATS (STRATA_NATS_URL, else embedded) ──▶ PostgreSQL (env, local, embedded)
              ──▶ each installed service on a free port, waiting for its /readyz
              ──▶ state file <state_dir>/cluster.json (read by `strata status` / `down`)

Stopping sends SIGTERM to the services in reverse start order (they drain), then stops
the embedded servers and removes the state file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from strata_cli.components import ServiceSpec, installed_services
from strata_testing.nats import EmbeddedNats
from strata_testing.poll import wait_until
from strata_testing.ports import free_port
from strata_testing.postgres import PostgresProvider, ensure_database

__all__ = ["Component", "LocalCluster", "StartupError", "probe_ready", "read_state"]

_log = logging.getLogger(__name__)
STATE_FILE = "cluster.json"
DATABASE = "strata"


class StartupError(RuntimeError):
    """A component did not come up; the message says which and why."""


@dataclass
class Component:
    """One running part of the cluster, as recorded in the state file."""

    name: str
    kind: str  # "nats" | "postgres" | "service"
    url: str
    source: str = ""  # embedded / env / local for servers
    pid: int | None = None
    log: str | None = None


@dataclass
class LocalCluster:
    """Starts and stops a local cluster. Use as a context manager or call start()/stop().

    Attributes:
        state_dir: where logs, embedded data and the state file go.
        services: services to start (default: every installed one).
        ready_timeout: seconds each service gets to report ready.
        service_env: extra environment per service name (e.g. engine count).
    """

    state_dir: Path
    services: list[ServiceSpec] | None = None
    ready_timeout: float = 60.0
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)
    database_url: str = ""
    _stack: ExitStack = field(default_factory=ExitStack)
    _procs: list[tuple[Component, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def nats_url(self) -> str:
        """URL of the cluster's NATS."""
        return next(c.url for c in self.components if c.kind == "nats")

    def start(self) -> list[Component]:
        """Start everything; on any failure stop what started and raise StartupError."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        try:
            self._start_nats()
            database_url = self._start_postgres()
            for spec in installed_services() if self.services is None else self.services:
                self._start_service(spec, database_url)
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self.components

    def _start_nats(self) -> None:
        external = os.environ.get("STRATA_NATS_URL")
        if external:
            self.components.append(Component("nats", "nats", external, source="env"))
            return
        url = self._stack.enter_context(EmbeddedNats(self.state_dir / "nats"))
        self.components.append(Component("nats", "nats", url, source="embedded"))

    def _start_postgres(self) -> str:
        server = self._stack.enter_context(PostgresProvider(self.state_dir / "postgres"))
        url = server.admin_url if server.source == "env" else ensure_database(server.admin_url, DATABASE)
        self.database_url = url
        self.components.append(Component("postgres", "postgres", _redact(url), source=server.source))
        return url

    def _start_service(self, spec: ServiceSpec, database_url: str) -> None:
        port = free_port()
        env = {
            **os.environ,
            "STRATA_NATS_URL": self.nats_url,
            f"{spec.env_prefix}HOST": "127.0.0.1",
            f"{spec.env_prefix}PORT": str(port),
        }
        if spec.needs_database:
            env["STRATA_DATABASE_URL"] = database_url
        env.update(self.service_env.get(spec.name, {}))
        if spec.extra_env is not None:
            env.update(spec.extra_env({c.name: c.url for c in self.components if c.kind == "service"}))
        log_path = self.state_dir / "logs" / f"{spec.name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", spec.module], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        url = f"http://127.0.0.1:{port}"
        component = Component(spec.name, "service", url, pid=proc.pid, log=str(log_path))
        self.components.append(component)
        self._procs.append((component, proc))

        try:
            wait_until(
                lambda: proc.poll() is not None or probe_ready(url), timeout=self.ready_timeout, what=f"{spec.name} up"
            )
        except AssertionError as exc:
            raise StartupError(f"{spec.name} not ready within {self.ready_timeout:.0f}s (log: {log_path})") from exc
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise StartupError(f"{spec.name} exited with {proc.returncode}: " + " | ".join(tail))

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM services in reverse order (drain), then stop NATS and PostgreSQL."""
        for component, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    _log.warning("%s did not stop within %.0fs; killing", component.name, grace)
                    proc.kill()
                    proc.wait()
            component.pid = None
        self._procs.clear()
        self._stack.close()
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)

    def exit_codes(self) -> dict[str, int | None]:
        """Exit status of each service process (None while running)."""
        return {component.name: proc.poll() for component, proc in self._procs}

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "components": [asdict(c) for c in self.components]}
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def probe_ready(base_url: str) -> bool:
    """Whether `<base_url>/readyz` answers 200."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {base_url!r}")
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:  # noqa: S310 - scheme checked above
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def read_state(state_dir: Path) -> dict[str, object] | None:
    """The state file of a running `strata up`, or None."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    state: dict[str, object] = json.loads(path.read_text())
    return state


def _redact(url: str) -> str:
    """`url` without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
