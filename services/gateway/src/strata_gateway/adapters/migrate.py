"""Apply the gateway's SQL migrations (`strata_gateway/migrations/NNNN_*.sql`) at start-up.

Every gateway replica, the ledger and `strata keys …` call :func:`migrate` when they start.
The files are plain SQL and idempotent on their own (`CREATE … IF NOT EXISTS`); on top of
that each applied file is recorded in `schema_migrations`, and the whole run happens under
a PostgreSQL session advisory lock, so replicas starting together apply each file exactly
once, in order, and the later ones wait for the first and then find nothing to do:

    replica A ── pg_advisory_lock ── 0001 ── 0002 ── unlock
    replica B ── pg_advisory_lock (waits) ───────────────── finds 0001, 0002 applied ── unlock

Each file runs in its own transaction together with its `schema_migrations` row. A file
that was already applied but has changed since is reported (warning), never re-run: a
change to the schema is a new file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

__all__ = ["MIGRATIONS_DIR", "Migration", "migrate", "migrations"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
"""Where the SQL files live (shipped inside the package)."""

_LOCK_ID = 0x5354_5241_5441_0001  # "STRATA" + 1: the advisory lock key of gateway migrations
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_log = logging.getLogger(__name__)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One SQL file.

    Attributes:
        version: its four-digit number (`0001`).
        name: the file name.
        sql: its text.
        sha256: hex digest of its text (detects edits of applied files).
    """

    version: str
    name: str
    sql: str
    sha256: str


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of `directory`, ordered by version.

    Raises:
        ValueError: a `.sql` file is misnamed or two files share a version.
    """
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name!r} must be named NNNN_snake_case.sql")
        version = match.group(1)
        if version in found:
            raise ValueError(f"migrations {found[version].name!r} and {path.name!r} share version {version}")
        sql = path.read_text(encoding="utf-8")
        found[version] = Migration(version, path.name, sql, hashlib.sha256(sql.encode()).hexdigest())
    return [found[v] for v in sorted(found)]


async def migrate(pool: asyncpg.Pool[asyncpg.Record], directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations of `directory` that this database lacks, in order.

    Safe to call from any number of processes at once (advisory lock). Holds one pool
    connection for the duration.

    Args:
        pool: the database pool.
        directory: where the `NNNN_*.sql` files are.

    Returns:
        The file names applied by this call (empty when the schema was current).
    """
    wanted = migrations(directory)
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(_CREATE_TABLE)
            rows = await conn.fetch("SELECT version, name, sha256 FROM schema_migrations")
            applied = {row["version"]: row for row in rows}
            for migration in wanted:
                row = applied.get(migration.version)
                if row is not None:
                    if row["sha256"] != migration.sha256:
                        _log.warning(
                            "applied migration %s changed since; not re-run (add a new file instead)", migration.name
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.sha256,
                    )
                applied_now.append(migration.name)
                _log.info("applied migration %s", migration.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
