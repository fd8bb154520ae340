"""`python -m strata_gateway.admin` (`strata tenants|keys …`) and the migrations it runs first."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import asyncpg
import pytest

from strata_gateway.adapters.auth_pg import PgAuthenticator
from strata_gateway.adapters.migrate import migrate, migrations
from strata_gateway.admin import main
from strata_gateway.domain.ports import GatewayError, Limits, Principal
from strata_testing.postgres import PostgresServer, fresh_database


def run(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--database-url", url])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def authenticate(url: str, key: str) -> Principal:
    async def go() -> Principal:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
        try:
            return await PgAuthenticator(pool).authenticate(f"Bearer {key}")
        finally:
            await pool.close()

    return asyncio.run(go())


def test_tenants_create_list_update(capsys: pytest.CaptureFixture[str], postgres_url: str) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"

    code, out, _ = run(capsys, postgres_url, "tenants", "create", tenant, "--name", "Acme", "--rpm", "60", "--json")
    assert code == 0
    assert rows(out)[0] | {"created_at": None} == {
        "id": tenant, "name": "Acme", "strategy": None, "rpm": 60, "tpm": None, "max_concurrency": None,
        "created_at": None,
    }  # fmt: skip

    code, out, _ = run(
        capsys, postgres_url, "tenants", "update", tenant, "--rpm", "none", "--tpm", "5000", "--strategy", "random",
        "--json",
    )  # fmt: skip
    assert code == 0
    updated = rows(out)[0]
    assert (updated["rpm"], updated["tpm"], updated["strategy"], updated["name"]) == (None, 5000, "random", "Acme")

    code, out, _ = run(capsys, postgres_url, "tenants", "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "NAME", "STRATEGY", "RPM", "TPM", "MAX_CONCURRENCY", "CREATED_AT"]
    assert any(line.startswith(tenant) for line in out.splitlines())


def test_duplicate_or_unknown_tenant_is_refused(capsys: pytest.CaptureFixture[str], postgres_url: str) -> None:
    tenant = f"dup-{uuid.uuid4().hex[:6]}"
    assert run(capsys, postgres_url, "tenants", "create", tenant)[0] == 0

    code, _, err = run(capsys, postgres_url, "tenants", "create", tenant)
    assert (code, "already exists" in err) == (1, True)
    code, _, err = run(capsys, postgres_url, "tenants", "update", "nobody-here", "--rpm", "5")
    assert (code, "no tenant" in err) == (1, True)
    code, _, err = run(capsys, postgres_url, "keys", "create", "--tenant", "nobody-here")
    assert (code, "no tenant" in err) == (1, True)
    code, _, err = run(capsys, postgres_url, "tenants", "create", "bad.id")
    assert code == 1


def test_key_lifecycle_create_use_list_revoke(capsys: pytest.CaptureFixture[str], postgres_url: str) -> None:
    tenant = f"kl-{uuid.uuid4().hex[:6]}"
    run(capsys, postgres_url, "tenants", "create", tenant, "--tpm", "9000")

    code, out, err = run(
        capsys, postgres_url, "keys", "create", "--tenant", tenant, "--models", "llama-8b, qwen-7b",
        "--rpm", "30", "--max-concurrency", "2", "--strategy", "prefix-cache",
    )  # fmt: skip
    assert code == 0
    key = out.strip()  # stdout is the key alone
    assert key.startswith("sk-strata-")
    assert "shown only once" in err
    key_id = key.split("-")[2]

    principal = authenticate(postgres_url, key)
    assert principal.tenant_id == tenant
    assert principal.allowed_models == frozenset({"llama-8b", "qwen-7b"})
    assert principal.limits == Limits(rpm=30, tpm=9000, max_concurrency=2)
    assert principal.default_strategy == "prefix-cache"

    code, out, _ = run(capsys, postgres_url, "keys", "list", "--tenant", tenant, "--json")
    listed = rows(out)
    assert code == 0
    assert [(r["id"], r["models"], r["revoked_at"]) for r in listed] == [(key_id, ["llama-8b", "qwen-7b"], None)]
    assert key not in out
    assert key[len("sk-strata-") + 13 + 4 :] not in out

    code, out, _ = run(capsys, postgres_url, "keys", "revoke", key_id, "--json")
    assert code == 0
    assert rows(out)[0]["revoked_at"] is not None
    with pytest.raises(GatewayError) as caught:
        authenticate(postgres_url, key)
    assert caught.value.status == 401

    code, _, err = run(capsys, postgres_url, "keys", "revoke", "ffffffffffff")
    assert (code, "no key" in err) == (1, True)


def test_keys_list_shows_every_tenant_by_default(capsys: pytest.CaptureFixture[str], postgres_url: str) -> None:
    tenants = [f"all-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for tenant in tenants:
        run(capsys, postgres_url, "tenants", "create", tenant)
        run(capsys, postgres_url, "keys", "create", "--tenant", tenant)

    code, out, _ = run(capsys, postgres_url, "keys", "list", "--json")

    assert code == 0
    assert set(tenants) <= {r["tenant"] for r in rows(out)}


def test_bad_limit_or_no_database_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRATA_DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as caught:
        main(["keys", "list"])
    assert caught.value.code == 2
    assert "STRATA_DATABASE_URL" in capsys.readouterr().err

    with pytest.raises(SystemExit) as caught:
        main(["keys", "create", "--tenant", "t", "--rpm", "0", "--database-url", "postgresql://x"])
    assert caught.value.code == 2


def test_module_entry_point_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "strata_gateway.admin", "keys", "create", "--help"],
        capture_output=True, text=True, timeout=60, env={**os.environ},
    )  # fmt: skip

    assert result.returncode == 0
    for flag in ("--tenant", "--models", "--rpm", "--tpm", "--max-concurrency", "--strategy"):
        assert flag in result.stdout


def test_migrations_apply_once_under_concurrent_replicas(postgres_server: PostgresServer) -> None:
    async def replicas(url: str) -> list[list[str]]:
        pools = [await asyncpg.create_pool(url, min_size=1, max_size=1) for _ in range(6)]
        try:
            first = await asyncio.gather(*(migrate(pool) for pool in pools))
            again = await migrate(pools[0])
            recorded = await pools[0].fetch("SELECT name FROM schema_migrations ORDER BY version")
        finally:
            for pool in pools:
                await pool.close()
        return [*first, again, [r["name"] for r in recorded]]

    with fresh_database(postgres_server.admin_url, "strata_migrate") as url:
        *first, again, recorded = asyncio.run(replicas(url))

    names = [m.name for m in migrations()]
    assert names == ["0001_tenants_keys.sql", "0002_usage.sql", "0003_usage_client_request_id.sql"]
    assert sorted(first, key=len)[-1] == names
    assert sum(len(applied) for applied in first) == len(names)
    assert again == []
    assert recorded == names
