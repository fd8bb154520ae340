"""Tests for strata_testing.postgres: resolution order, fresh databases, embedded server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest

from strata_testing.ports import free_port
from strata_testing.postgres import (
    PostgresProvider,
    PostgresServer,
    PostgresUnavailable,
    database_url,
    fresh_database,
)

ENV_VAR = "STRATA_DATABASE_URL"


def _fetch(url: str, sql: str) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(go())


def _database_names(admin_url: str) -> set[str]:
    return {row["datname"] for row in _fetch(admin_url, "SELECT datname FROM pg_database")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """Whatever server the normal resolution order finds (env, local or embedded)."""
    with PostgresProvider(tmp_path_factory.mktemp("pg")) as resolved:
        yield resolved


def test_env_var_takes_precedence(server: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, server.admin_url)
    with PostgresProvider(tmp_path, allow_local=False, allow_embedded=False) as resolved:
        assert resolved == PostgresServer(admin_url=server.admin_url, source="env")
    assert list(tmp_path.iterdir()) == []


def test_local_server_is_used_when_env_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    try:
        with PostgresProvider(tmp_path, allow_embedded=False) as resolved:
            assert resolved.source == "local"
            assert resolved.admin_url == "postgresql://postgres@127.0.0.1:5432/postgres"
    except PostgresUnavailable:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")


def test_fresh_database_is_empty_distinct_and_dropped(server: PostgresServer) -> None:
    with (
        fresh_database(server.admin_url) as first,
        fresh_database(server.admin_url, prefix="other") as second,
    ):
        assert first != second
        first_name = first.rsplit("/", 1)[1]
        second_name = second.rsplit("/", 1)[1]
        assert first_name.startswith("strata_test_")
        assert second_name.startswith("other_")
        assert {first_name, second_name} <= _database_names(server.admin_url)
        assert _fetch(first, "SELECT current_database() AS db")[0]["db"] == first_name
        user_tables = (
            "SELECT count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        )
        assert _fetch(first, user_tables)[0]["n"] == 0
        _fetch(first, "CREATE TABLE t (x int)")
        assert _fetch(first, user_tables)[0]["n"] == 1
        assert _fetch(second, user_tables)[0]["n"] == 0
    assert not {first_name, second_name} & _database_names(server.admin_url)


def test_fresh_database_drops_despite_open_connections(server: PostgresServer) -> None:
    loop = asyncio.new_event_loop()  # not running: fresh_database may still use asyncio.run
    try:
        with fresh_database(server.admin_url) as url:
            name = url.rsplit("/", 1)[1]
            conn = loop.run_until_complete(asyncpg.connect(url))
        assert name not in _database_names(server.admin_url)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            loop.run_until_complete(conn.fetchval("SELECT 1"))  # terminated by the drop
        conn.terminate()
    finally:
        loop.close()


def test_embedded_server_when_forced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with PostgresProvider(tmp_path, allow_local=False) as resolved:
        assert resolved.source == "embedded"
        assert ":5432/" not in resolved.admin_url
        _fetch(resolved.admin_url, "CREATE TABLE items (id int PRIMARY KEY)")
        _fetch(resolved.admin_url, "INSERT INTO items VALUES (1), (2)")
        assert _fetch(resolved.admin_url, "SELECT count(*) AS n FROM items")[0]["n"] == 2
        (server_dir,) = tmp_path.iterdir()
        pid_file = server_dir / "data" / "postmaster.pid"
        pid = int(pid_file.read_text().splitlines()[0])
        status = Path(f"/proc/{pid}/status").read_text()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if os.geteuid() == 0:
            assert uid != 0, "postgres must not run as root"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not server_dir.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError):
        _fetch(resolved.admin_url, "SELECT 1")


def test_bad_env_url_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/postgres"
    monkeypatch.setenv(ENV_VAR, url)
    with pytest.raises(PostgresUnavailable, match=ENV_VAR) as raised, PostgresProvider(tmp_path):
        pass
    assert "s3cret" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # no fallback to an embedded server


def test_nothing_allowed_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with (
        pytest.raises(PostgresUnavailable, match="no PostgreSQL server"),
        PostgresProvider(tmp_path, allow_local=False, allow_embedded=False),
    ):
        pass


def test_helpers_refuse_a_running_event_loop(tmp_path: Path) -> None:
    async def inside_loop() -> None:
        with (
            pytest.raises(RuntimeError, match="running event loop"),
            fresh_database("postgresql://postgres@127.0.0.1:1/postgres"),
        ):
            pass
        with pytest.raises(RuntimeError, match="running event loop"):
            PostgresProvider(tmp_path).__enter__()

    asyncio.run(inside_loop())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql://postgres@127.0.0.1:5432/db1",
        ),
        (
            "postgresql://u:p%40ss@h:1/postgres?sslmode=disable",
            "postgresql://u:p%40ss@h:1/db1?sslmode=disable",
        ),
        ("postgres://u@h/", "postgres://u@h/db1"),
        ("postgresql:///postgres?host=/run/pg", "postgresql:///db1?host=/run/pg"),
    ],
)
def test_database_url_swaps_only_the_name(url: str, expected: str) -> None:
    assert database_url(url, "db1") == expected


def test_fresh_database_rejects_bad_prefix() -> None:
    with pytest.raises(ValueError, match="prefix"), fresh_database("postgresql://x@h/db", 'a"b'):
        pass
