"""Tenants and API keys in PostgreSQL: the queries behind `strata tenants|keys …` and auth.

Tables come from `migrations/0001_tenants_keys.sql`. A key's secret never reaches this
module in clear except inside :meth:`KeyStore.create_key`'s return value, which the
caller shows once; only `secret_sha256` is written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

import asyncpg

from strata_gateway.domain.keys import NewKey, new_key
from strata_gateway.domain.ports import Limits

__all__ = [
    "KeyAuthRow",
    "KeyRow",
    "KeyStore",
    "StoreError",
    "TenantChanges",
    "TenantRow",
    "valid_tenant_id",
]

_TENANT_ID = re.compile(r"^[A-Za-z0-9_=\-]{1,64}$")
_TENANT_COLUMNS = ("name", "default_strategy", "rpm", "tpm", "max_concurrency")
_KEY_COLUMNS = (
    "k.id, k.tenant_id, k.prefix, k.allowed_models, k.default_strategy, k.rpm, k.tpm, k.max_concurrency,"
    " k.created_at, k.revoked_at"
)

_INSERT_KEY = (
    "INSERT INTO api_keys AS k (id, tenant_id, prefix, secret_sha256, allowed_models, default_strategy,"  # noqa: S608
    f" rpm, tpm, max_concurrency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_KEY_COLUMNS}"
)
_REVOKE_KEY = (
    "UPDATE api_keys AS k SET revoked_at = coalesce(k.revoked_at, now()) WHERE k.id = $1"  # noqa: S608
    f" RETURNING {_KEY_COLUMNS}"
)


class StoreError(ValueError):
    """A request the store refuses (unknown tenant or key, duplicate tenant, bad value)."""


def valid_tenant_id(tenant_id: str) -> bool:
    """Whether `tenant_id` can be a tenant id (it is also a NATS subject token)."""
    return _TENANT_ID.fullmatch(tenant_id) is not None


@dataclass(frozen=True)
class TenantRow:
    """One tenant."""

    id: str
    name: str
    default_strategy: str | None
    limits: Limits
    created_at: datetime


@dataclass(frozen=True)
class KeyRow:
    """One API key, without its hash."""

    id: str
    tenant_id: str
    prefix: str
    allowed_models: tuple[str, ...] | None
    default_strategy: str | None
    limits: Limits
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class KeyAuthRow:
    """What authentication needs about a key: the key, its hash and its tenant."""

    key: KeyRow
    secret_sha256: bytes
    tenant: TenantRow


class TenantChanges(TypedDict, total=False):
    """Fields of a tenant update; an absent field is left as is, None clears it."""

    name: str
    default_strategy: str | None
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None


def _limits(row: asyncpg.Record, prefix: str = "") -> Limits:
    return Limits(row[f"{prefix}rpm"], row[f"{prefix}tpm"], row[f"{prefix}max_concurrency"])


def _tenant(row: asyncpg.Record, prefix: str = "") -> TenantRow:
    return TenantRow(
        row[f"{prefix}id"], row[f"{prefix}name"], row[f"{prefix}default_strategy"], _limits(row, prefix),
        row[f"{prefix}created_at"],
    )  # fmt: skip


def _key(row: asyncpg.Record) -> KeyRow:
    models = row["allowed_models"]
    return KeyRow(
        row["id"], row["tenant_id"], row["prefix"], None if models is None else tuple(models),
        row["default_strategy"], _limits(row), row["created_at"], row["revoked_at"],
    )  # fmt: skip


class KeyStore:
    """Tenant and key queries over one asyncpg pool (owned by the caller)."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def create_tenant(
        self,
        tenant_id: str,
        name: str | None = None,
        *,
        default_strategy: str | None = None,
        limits: Limits | None = None,
    ) -> TenantRow:
        """Insert a tenant.

        Raises:
            StoreError: the id is invalid or taken, or a limit is not positive.
        """
        if not valid_tenant_id(tenant_id):
            raise StoreError(f"tenant id {tenant_id!r} must be 1-64 letters, digits, '_', '-' or '='")
        limits = limits or Limits()
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO tenants (id, name, default_strategy, rpm, tpm, max_concurrency)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                tenant_id, name or tenant_id, default_strategy, limits.rpm, limits.tpm, limits.max_concurrency,
            )  # fmt: skip
        except asyncpg.UniqueViolationError:
            raise StoreError(f"tenant {tenant_id!r} already exists") from None
        except asyncpg.CheckViolationError as exc:
            raise StoreError(f"invalid tenant value: {exc.detail or exc}") from None
        assert row is not None
        return _tenant(row)

    async def update_tenant(self, tenant_id: str, changes: TenantChanges) -> TenantRow:
        """Change some fields of a tenant.

        Raises:
            StoreError: unknown tenant, unknown field or a limit that is not positive.
        """
        unknown = set(changes) - set(_TENANT_COLUMNS)
        if unknown:
            raise StoreError(f"unknown tenant fields: {sorted(unknown)}")
        if not changes:
            return await self.get_tenant(tenant_id)
        columns = [c for c in _TENANT_COLUMNS if c in changes]  # fixed names only: no user text in the SQL
        assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(columns, start=2))
        values: list[Any] = [changes[c] for c in columns]  # type: ignore[literal-required]
        try:
            row = await self._pool.fetchrow(
                f"UPDATE tenants SET {assignments} WHERE id = $1 RETURNING *",  # noqa: S608 - fixed column names
                tenant_id,
                *values,
            )
        except asyncpg.CheckViolationError as exc:
            raise StoreError(f"invalid tenant value: {exc.detail or exc}") from None
        if row is None:
            raise StoreError(f"no tenant {tenant_id!r}")
        return _tenant(row)

    async def get_tenant(self, tenant_id: str) -> TenantRow:
        """One tenant; StoreError if unknown."""
        row = await self._pool.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant_id)
        if row is None:
            raise StoreError(f"no tenant {tenant_id!r}")
        return _tenant(row)

    async def list_tenants(self) -> list[TenantRow]:
        """Every tenant, by id."""
        return [_tenant(row) for row in await self._pool.fetch("SELECT * FROM tenants ORDER BY id")]

    async def create_key(
        self,
        tenant_id: str,
        *,
        allowed_models: Sequence[str] | None = None,
        default_strategy: str | None = None,
        limits: Limits | None = None,
    ) -> tuple[KeyRow, NewKey]:
        """Create a key for `tenant_id`; the returned NewKey holds the only copy of the secret.

        Raises:
            StoreError: unknown tenant or a limit that is not positive.
        """
        key = new_key()
        limits = limits or Limits()
        models = None if allowed_models is None else sorted(set(allowed_models))
        try:
            row = await self._pool.fetchrow(
                _INSERT_KEY,
                key.key_id, tenant_id, key.prefix, key.secret_sha256, models, default_strategy,
                limits.rpm, limits.tpm, limits.max_concurrency,
            )  # fmt: skip
        except asyncpg.ForeignKeyViolationError:
            raise StoreError(f"no tenant {tenant_id!r} (create it first: tenants create {tenant_id})") from None
        except asyncpg.CheckViolationError as exc:
            raise StoreError(f"invalid key value: {exc.detail or exc}") from None
        assert row is not None
        return _key(row), key

    async def list_keys(self, tenant_id: str | None = None) -> list[KeyRow]:
        """Every key (of one tenant if given), oldest first; revoked ones included."""
        rows = await self._pool.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys k WHERE $1::text IS NULL OR k.tenant_id = $1"  # noqa: S608 - constant
            " ORDER BY k.created_at, k.id",
            tenant_id,
        )
        return [_key(row) for row in rows]

    async def revoke_key(self, key_id: str) -> KeyRow:
        """Revoke a key (idempotent: a revoked key keeps its first revocation time).

        Raises:
            StoreError: unknown key.
        """
        row = await self._pool.fetchrow(
            _REVOKE_KEY,
            key_id,
        )
        if row is None:
            raise StoreError(f"no key {key_id!r}")
        return _key(row)

    async def lookup(self, key_id: str) -> KeyAuthRow | None:
        """The key `key_id` with its hash and tenant (revoked keys too), or None. One indexed read."""
        row = await self._pool.fetchrow(
            f"SELECT {_KEY_COLUMNS}, k.secret_sha256, t.id AS t_id, t.name AS t_name,"  # noqa: S608 - constant
            " t.default_strategy AS t_default_strategy, t.rpm AS t_rpm, t.tpm AS t_tpm,"
            " t.max_concurrency AS t_max_concurrency, t.created_at AS t_created_at"
            " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1",
            key_id,
        )
        if row is None:
            return None
        return KeyAuthRow(_key(row), bytes(row["secret_sha256"]), _tenant(row, "t_"))
