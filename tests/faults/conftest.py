"""Fixtures of the fault tests: real service processes around real NATS and PostgreSQL.

* `cluster(nats_url, database_url="")`: a :class:`Cluster` that starts
  `python -m strata_<service>` processes on free ports (settings as environment
  variables, logs under the test's tmp dir) and stops every one of them at teardown,
  in reverse start order, whatever the test did to them.
* `restartable_nats`: a nats-server with JetStream on a port picked with free_port and
  a store directory that survives :meth:`NatsServer.stop` / :meth:`NatsServer.start`
  (EmbeddedNats picks a new port and deletes its store, so it cannot come back).
* `restartable_postgres`: an embedded PostgreSQL owned by the test (never the session's
  shared server): `.url` of database `strata`, `.stop()` / `.start()` on the same port
  with the same data (`PostgresProvider.stop_embedded` / `start_embedded`).

Tests never import this module; they get its classes through the fixtures.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from strata_testing import free_port, poll_until
from strata_testing.nats import RestartableNats as NatsServer
from strata_testing.postgres import PostgresProvider, ensure_database

_READY_TIMEOUT_S = 60.0
_STOP_GRACE_S = 20.0
_INHERITED_PREFIXES = ("STRATA_", "OTEL_")  # the tests set every Strata setting; no span export


@dataclass
class ServiceProcess:
    """One `python -m <module>` child process with its HTTP port (probes, /metrics, API)."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.proc.poll() is None

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
        """Status and body of `GET <url><path>`."""
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"{self.url}{path}", headers=headers) as response,
        ):
            return response.status, await response.text()

    async def wait_ready(self, timeout: float = _READY_TIMEOUT_S) -> None:
        """Poll `/readyz` until 200; fail at once (with the log's tail) if the process exits."""

        async def ready() -> bool:
            if not self.running:
                raise _Exited(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            return (await self.get("/readyz"))[0] == 200

        try:
            await poll_until(ready, timeout=timeout, interval=0.05, what=f"{self.name} ready")
        except _Exited:
            raise
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from exc

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` on `/metrics` whose labels include `labels` (0 if none)."""
        status, text = await self.get("/metrics")
        assert status == 200, text
        return sum_samples(text, name, labels)

    def kill(self) -> int:
        """SIGKILL the process and reap it; returns its exit status."""
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=10)

    def stop(self, grace: float = _STOP_GRACE_S) -> int:
        """SIGTERM (the service drains), SIGKILL after `grace` seconds; returns the exit status."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines the process wrote so far (other lines are skipped)."""
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a line torn by a kill
        return records

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process's log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class _Exited(AssertionError):
    """A service process exited while the test waited for it."""


def sum_samples(text: str, name: str, labels: Mapping[str, str]) -> float:
    """Sum of the Prometheus text samples of `name` (exact metric name) matching `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        sample = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        if all(sample.get(key) == f'"{wanted}"' for key, wanted in labels.items()):
            total += float(value)
    return total


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


@dataclass
class Cluster:
    """Service processes of one test, all sharing one NATS and (optionally) one PostgreSQL.

    Attributes:
        workdir: logs and spool directories go here.
        nats_url: NATS of every process started.
        database_url: PostgreSQL of the gateways, the ledger and the admin tool.
    """

    workdir: Path
    nats_url: str
    database_url: str = ""
    started: list[ServiceProcess] = field(default_factory=list)

    def spawn(self, name: str, module: str, env_prefix: str, settings: Mapping[str, object]) -> ServiceProcess:
        """Start `python -m module` with `settings` as `<env_prefix><FIELD>` variables (no wait)."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
        env["STRATA_NATS_URL"] = self.nats_url
        if self.database_url:
            env["STRATA_DATABASE_URL"] = self.database_url
        env.update({f"{env_prefix}{key.upper()}": _env_value(value) for key, value in settings.items()})
        env[f"{env_prefix}PORT"] = str(port)
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        service = ServiceProcess(name, proc, port, log)
        self.started.append(service)
        return service

    async def start(self, name: str, module: str, env_prefix: str, **settings: object) -> ServiceProcess:
        """:meth:`spawn`, then wait for its `/readyz`."""
        service = self.spawn(name, module, env_prefix, settings)
        await service.wait_ready()
        return service

    async def enginesim(
        self, name: str, *, model: str, **settings: object
    ) -> tuple[ServiceProcess, list[dict[str, Any]]]:
        """A `strata_enginesim` process (`engine_id_prefix` = `name`, no KV events) and its `/engines`."""
        settings = {"engine_id_prefix": name, "served_model_name": model, "kv_events": False, **settings}
        sim = await self.start(name, "strata_enginesim", "STRATA_ENGINESIM_", **settings)
        status, body = await sim.get("/engines")
        assert status == 200, body
        engines: list[dict[str, Any]] = json.loads(body)["engines"]
        return sim, engines

    async def agent(self, engines: list[dict[str, Any]], **settings: object) -> ServiceProcess:
        """A `strata_engineagent` registering `engines` (entries of enginesim's `/engines`).

        Scrapes may take 2 s instead of 250 ms before an engine is reported unhealthy: on a
        small, busy test machine a slow `/metrics` answer would otherwise take a live engine
        out of routing (503s that have nothing to do with the fault under test). A dead
        engine refuses the connection and is reported at once either way.
        """
        settings = {"scrape_timeout_ms": 2000, **settings}
        return await self.start("engineagent", "strata_engineagent", "STRATA_ENGINEAGENT_", engines=engines, **settings)

    def gateway(self, name: str, **settings: object) -> ServiceProcess:
        """Spawn a `strata_gateway` replica `name` (instance id, own spool dir; router off)."""
        settings = {
            "instance_id": name,
            "usage_spool_dir": str(self.workdir / f"spool-{name}"),
            "router_enabled": False,  # no router process: local picks, no fallback metric noise
            "shutdown_grace_s": 5,
            **settings,
        }
        return self.spawn(name, "strata_gateway", "STRATA_GATEWAY_", settings)

    def ledger(self, **settings: object) -> ServiceProcess:
        """Spawn a `strata_gateway.ledger` process (quick fetches and retries, for tests)."""
        settings = {"fetch_timeout_s": 0.3, "retry_max_s": 0.5, "ack_wait_s": 5, "shutdown_grace_s": 5, **settings}
        return self.spawn("ledger", "strata_gateway.ledger", "STRATA_LEDGER_", settings)

    async def admin(self, *args: str) -> str:
        """Run `python -m strata_gateway.admin ARGS --database-url …`; its stdout (exit 0 required)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "strata_gateway.admin", *args, "--database-url", self.database_url,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        assert proc.returncode == 0, f"admin {args}: {err.decode(errors='replace')}"
        return out.decode().strip()

    async def wait_serving(
        self, gateway: ServiceProcess, model: str, engines: int, headers: Mapping[str, str] | None = None
    ) -> None:
        """Poll the gateway's `/v1/models` until `model` is served by `engines` engines."""

        async def serving() -> bool:
            status, body = await gateway.get("/v1/models", headers)
            cards = json.loads(body)["data"] if status == 200 else []
            return any(card["id"] == model and card["engines"] == engines for card in cards)

        await poll_until(serving, timeout=30, interval=0.05, what=f"{gateway.name} serves {model} on {engines} engines")

    def stop_all(self) -> None:
        """Stop every process still running, newest first."""
        for service in reversed(self.started):
            service.stop()


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Cluster]]:
    """`cluster(nats_url, database_url="")` → a :class:`Cluster`; all its processes stop at teardown."""
    made: list[Cluster] = []

    def make(nats_url: str, database_url: str = "") -> Cluster:
        made.append(Cluster(tmp_path, nats_url, database_url))
        return made[-1]

    try:
        yield make
    finally:
        for each in made:
            await asyncio.to_thread(each.stop_all)


@pytest.fixture
def restartable_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A NatsServer of this test, started; stopped at teardown."""
    server = NatsServer(free_port(), tmp_path / "nats-store", tmp_path / "nats.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RestartablePostgres:
    """An embedded PostgreSQL of one test (see the module docstring)."""

    provider: PostgresProvider
    url: str

    def stop(self) -> None:
        """Fast shutdown; data and port are kept."""
        self.provider.stop_embedded()

    def start(self) -> None:
        """Back on the same port with the same data (call through asyncio.to_thread)."""
        self.provider.start_embedded()


@pytest.fixture
def restartable_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RestartablePostgres]:
    """An embedded server even when STRATA_DATABASE_URL or a local server exists (those are shared)."""
    monkeypatch.delenv("STRATA_DATABASE_URL", raising=False)
    provider = PostgresProvider(tmp_path / "postgres", allow_local=False)
    with provider as server:
        yield RestartablePostgres(provider, ensure_database(server.admin_url, "strata"))
