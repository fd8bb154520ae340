"""Batched, idempotent inserts of usage records into the `usage` table.

One statement per batch: `INSERT … SELECT * FROM unnest($1::text[], …) ON CONFLICT
(request_id) DO NOTHING`, so a batch costs one round trip and a record delivered twice
(redelivery, re-publish from a gateway spool) is inserted once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from strata_contracts.messages import UsageRecord

__all__ = ["insert_usage", "write_batch"]

_INSERT = """
INSERT INTO usage (request_id, tenant_id, api_key_id, model, engine_id, strategy, endpoint, stream, status,
                   prompt_tokens, completion_tokens, cached_tokens, ttft_ms, latency_ms, started_at, error,
                   client_request_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::boolean[], $9::integer[], $10::integer[], $11::integer[], $12::integer[],
                     $13::double precision[], $14::double precision[], $15::timestamptz[], $16::text[],
                     $17::text[])
ON CONFLICT (request_id) DO NOTHING
"""


async def write_batch(pool: asyncpg.Pool[asyncpg.Record], records: Sequence[UsageRecord]) -> int:
    """Insert `records` in one transaction on a pool connection; returns how many rows were new.

    Any failure (server gone, session killed, client protocol state broken) terminates the
    connection before it returns to the pool, so the next batch gets a fresh one; the
    exception is re-raised for the caller to retry the batch.
    """
    conn = await pool.acquire()
    try:
        async with conn.transaction():
            return await insert_usage(conn, records)
    except BaseException:
        # A session the server killed is already detached from the pool (asyncpg hands its
        # slot back on connection loss); terminating it then raises InterfaceError, which
        # must not hide the failure itself.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()
        raise
    finally:
        await pool.release(conn)


async def insert_usage(conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record], records: Sequence[UsageRecord]) -> int:
    """Insert `records` (in the caller's transaction, if any); returns how many rows were new."""
    if not records:
        return 0
    columns: list[list[object]] = [[] for _ in range(17)]
    for r in records:
        row = (
            r.request_id, r.tenant_id, r.api_key_id, r.model, r.engine_id, r.strategy, r.endpoint, r.stream,
            r.status, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.ttft_ms, r.latency_ms,
            datetime.fromtimestamp(r.started_at, UTC), r.error, r.client_request_id,
        )  # fmt: skip
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    status = await conn.execute(_INSERT, *columns)
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"
