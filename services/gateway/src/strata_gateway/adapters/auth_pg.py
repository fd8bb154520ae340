"""PgAuthenticator: `Authorization: Bearer sk-strata-<id>-<secret>` → Principal, keys in PostgreSQL.

Hot path: parse the key, look its id up in a small in-process TTL cache (the row's hash,
revocation and the Principal it resolves to), compare the secret's SHA-256 in constant
time. PostgreSQL is read once per key id per `cache_ttl_s` (concurrent misses for the
same id share one query), so a revoked key stops working at most `cache_ttl_s` after
`strata keys revoke`, and a limit or allow-list change applies within the same delay.
Unknown ids are remembered for at most 1 s (a key used right after it is created works
within a second; a flood of random ids costs one query per id per second). The cache is
an LRU of `max_entries` ids. Wrong secrets never reach the database: the cached hash
answers them. When PostgreSQL cannot be reached and the id is not cached, the answer is
503 (`service_unavailable`), never a guess.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter

from strata_gateway.adapters.keystore_pg import KeyAuthRow, KeyStore
from strata_gateway.domain.keys import bearer_token, merge_limits, parse_key, secret_matches
from strata_gateway.domain.limits import ScopedPrincipal
from strata_gateway.domain.ports import GatewayError, Principal

__all__ = ["PgAuthenticator", "principal_of"]

_log = logging.getLogger(__name__)
_NEGATIVE_TTL_S = 1.0
AUTH = Counter(
    "strata_gateway_auth_total", "Authentication outcomes.", ["outcome"]
)  # ok | missing | invalid | revoked | unavailable
LOOKUPS = Counter("strata_gateway_auth_db_lookups_total", "API-key reads from PostgreSQL (cache misses).")


def principal_of(row: KeyAuthRow) -> ScopedPrincipal:
    """The Principal a key resolves to: the key's overrides over its tenant's settings."""
    key, tenant = row.key, row.tenant
    return ScopedPrincipal(
        tenant_id=tenant.id,
        key_id=key.id,
        allowed_models=None if key.allowed_models is None else frozenset(key.allowed_models),
        default_strategy=key.default_strategy or tenant.default_strategy,
        limits=merge_limits(key.limits, tenant.limits),
        tenant_limits=tenant.limits,
    )


@dataclass(frozen=True)
class _Entry:
    secret_sha256: bytes | None  # None = no such key
    revoked: bool
    principal: Principal | None
    expires: float


def _unauthorized(message: str, outcome: str) -> GatewayError:
    AUTH.labels(outcome).inc()
    return GatewayError(401, message, "authentication_error", code="invalid_api_key")


class PgAuthenticator:
    """The gateway's Authenticator (domain.ports) over the `api_keys` and `tenants` tables.

    Args:
        pool: asyncpg pool on the gateway database (owned by the caller).
        cache_ttl_s: how long a looked-up key is trusted (also the revocation delay bound).
        max_entries: cache capacity (least recently used ids are dropped).
        clock: monotonic time source (injectable for tests).
    """

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        cache_ttl_s: float = 5.0,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = KeyStore(pool)
        self._ttl = cache_ttl_s
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Task[_Entry]] = {}
        self.db_lookups = 0
        """PostgreSQL reads made so far (for tests and debugging)."""

    async def authenticate(self, authorization: str | None) -> Principal:
        """Resolve the header to a Principal.

        Raises:
            GatewayError: 401 for a missing, malformed, unknown, wrong or revoked key;
                503 when PostgreSQL is unreachable and the key is not cached.
        """
        token = bearer_token(authorization)
        if token is None:
            raise _unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer sk-strata-…'.", "missing"
            )
        parsed = parse_key(token)
        if parsed is None:
            raise _unauthorized("Incorrect API key provided.", "invalid")
        entry = await self._entry(parsed.key_id)
        if not secret_matches(parsed.secret, entry.secret_sha256) or entry.principal is None:
            raise _unauthorized("Incorrect API key provided.", "invalid")
        if entry.revoked:
            raise _unauthorized("This API key has been revoked.", "revoked")
        AUTH.labels("ok").inc()
        return entry.principal

    def forget(self, key_id: str | None = None) -> None:
        """Drop one cached key (or all): the next request re-reads PostgreSQL."""
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.pop(key_id, None)

    async def _entry(self, key_id: str) -> _Entry:
        entry = self._cache.get(key_id)
        if entry is not None and entry.expires > self._clock():
            self._cache.move_to_end(key_id)
            return entry
        task = self._loading.get(key_id)
        if task is None:
            task = asyncio.create_task(self._load(key_id), name=f"auth-load-{key_id}")
            self._loading[key_id] = task
            task.add_done_callback(functools.partial(self._loaded, key_id))
        try:
            return await asyncio.shield(task)
        except Exception as exc:  # noqa: BLE001 - asyncpg raises several unrelated types; all mean "unavailable"
            AUTH.labels("unavailable").inc()
            _log.warning("API-key lookup failed: %r", exc)
            raise GatewayError(
                503, "Authentication is temporarily unavailable.", "api_error", code="service_unavailable"
            ) from None

    def _loaded(self, key_id: str, task: asyncio.Task[_Entry]) -> None:
        self._loading.pop(key_id, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have gone away

    async def _load(self, key_id: str) -> _Entry:
        self.db_lookups += 1
        LOOKUPS.inc()
        row = await self._store.lookup(key_id)
        now = self._clock()
        if row is None:
            entry = _Entry(None, False, None, now + min(self._ttl, _NEGATIVE_TTL_S))
        else:
            entry = _Entry(row.secret_sha256, row.key.revoked_at is not None, principal_of(row), now + self._ttl)
        self._cache[key_id] = entry
        self._cache.move_to_end(key_id)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return entry
