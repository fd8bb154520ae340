"""PgAuthenticator against a real PostgreSQL: keys resolve to Principals, bad ones get 401."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from strata_gateway.adapters.auth_pg import PgAuthenticator
from strata_gateway.adapters.keystore_pg import KeyStore
from strata_gateway.domain.keys import parse_key
from strata_gateway.domain.limits import ScopedPrincipal
from strata_gateway.domain.ports import GatewayError, Limits


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tenant_id() -> str:
    return f"acme-{uuid.uuid4().hex[:8]}"


async def bearer(store: KeyStore, tenant: str, **key: object) -> tuple[str, str]:
    row, new = await store.create_key(tenant, **key)  # type: ignore[arg-type]
    return row.id, f"Bearer {new.key}"


async def test_key_resolves_to_its_tenant_limits_models_and_strategy(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    store, tenant = KeyStore(pool), tenant_id()
    await store.create_tenant(tenant, default_strategy="least-request", limits=Limits(rpm=100, tpm=1000))
    key_id, header = await bearer(store, tenant, allowed_models=["b", "a"], limits=Limits(rpm=10, max_concurrency=4))

    principal = await PgAuthenticator(pool).authenticate(header)

    assert principal == ScopedPrincipal(
        tenant_id=tenant,
        key_id=key_id,
        allowed_models=frozenset({"a", "b"}),
        default_strategy="least-request",
        limits=Limits(rpm=10, tpm=1000, max_concurrency=4),
        tenant_limits=Limits(rpm=100, tpm=1000),
    )


async def test_key_strategy_overrides_and_no_models_means_every_model(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    store, tenant = KeyStore(pool), tenant_id()
    await store.create_tenant(tenant, default_strategy="random")
    _, header = await bearer(store, tenant, default_strategy="prefix-cache")

    principal = await PgAuthenticator(pool).authenticate(f"bearer  {header.split()[1]} ")

    assert principal.default_strategy == "prefix-cache"
    assert principal.allowed_models is None
    assert principal.limits == Limits()


async def test_model_outside_the_allow_list_is_visible_on_the_principal(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    store, tenant = KeyStore(pool), tenant_id()
    await store.create_tenant(tenant)
    _, header = await bearer(store, tenant, allowed_models=["llama-8b"])

    principal = await PgAuthenticator(pool).authenticate(header)

    assert principal.allowed_models is not None
    assert "llama-8b" in principal.allowed_models
    assert "gpt-4o" not in principal.allowed_models  # the request path answers 403 for this one


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer sk-proj-abc",
        "Bearer sk-strata-NOTHEX-secretsecretsecretsecret",
        "Bearer sk-strata-0123456789ab-secretsecretsecretsecret",  # well-formed, unknown id
    ],
)
async def test_missing_malformed_or_unknown_keys_get_401(
    pool: asyncpg.Pool[asyncpg.Record], header: str | None
) -> None:
    with pytest.raises(GatewayError) as caught:
        await PgAuthenticator(pool).authenticate(header)

    assert caught.value.status == 401
    assert caught.value.type == "authentication_error"
    assert caught.value.code == "invalid_api_key"


async def test_wrong_secret_gets_401_without_another_database_read(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    store, tenant = KeyStore(pool), tenant_id()
    await store.create_tenant(tenant)
    _, header = await bearer(store, tenant)
    auth = PgAuthenticator(pool)
    await auth.authenticate(header)
    parsed = parse_key(header.split()[1])
    assert parsed is not None

    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(f"Bearer sk-strata-{parsed.key_id}-{'x' * 43}")

    assert caught.value.status == 401
    assert auth.db_lookups == 1


async def test_hot_path_is_served_from_the_cache_and_misses_are_coalesced(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    store, tenant = KeyStore(pool), tenant_id()
    await store.create_tenant(tenant)
    _, header = await bearer(store, tenant)
    auth = PgAuthenticator(pool)

    await asyncio.gather(*(auth.authenticate(header) for _ in range(20)))
    for _ in range(50):
        await auth.authenticate(header)

    assert auth.db_lookups == 1


async def test_revoked_key_is_refused_within_the_cache_ttl(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    store, tenant, ticks = KeyStore(pool), tenant_id(), Ticks()
    await store.create_tenant(tenant)
    key_id, header = await bearer(store, tenant)
    auth = PgAuthenticator(pool, cache_ttl_s=5, clock=ticks)
    await auth.authenticate(header)

    await store.revoke_key(key_id)
    ticks.now += 4.9
    await auth.authenticate(header)  # still cached: at most the TTL of grace
    ticks.now += 0.2

    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(header)
    assert caught.value.status == 401
    assert "revoked" in caught.value.message


async def test_database_down_and_key_not_cached_is_503(postgres_url: str) -> None:
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=1)
    auth = PgAuthenticator(pool)
    await pool.close()

    with pytest.raises(GatewayError) as caught:
        await auth.authenticate("Bearer sk-strata-0123456789ab-secretsecretsecretsecret")

    assert caught.value.status == 503
    assert caught.value.code == "service_unavailable"


async def test_only_the_hash_of_the_secret_is_stored(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    store, tenant = KeyStore(pool), tenant_id()
    await store.create_tenant(tenant)
    _, header = await bearer(store, tenant)
    parsed = parse_key(header.split()[1])
    assert parsed is not None

    rows = await pool.fetch("SELECT * FROM api_keys WHERE tenant_id = $1", tenant)

    dumped = repr([dict(row) for row in rows])
    assert parsed.secret not in dumped
    assert parsed.secret[4:] not in dumped  # the listing prefix shows 4 characters, nothing more
