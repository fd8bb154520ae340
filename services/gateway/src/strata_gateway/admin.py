"""`python -m strata_gateway.admin` (also `strata tenants …` / `strata keys …`): tenants and API keys.

    tenants create TENANT [--name N] [--rpm N] [--tpm N] [--max-concurrency N] [--strategy S]
    tenants update TENANT [--name N] [--rpm N|none] [--tpm N|none] [--max-concurrency N|none] [--strategy S|none]
    tenants list
    keys create --tenant T [--models a,b] [--rpm N] [--tpm N] [--max-concurrency N] [--strategy S]
    keys list [--tenant T]
    keys revoke KEY_ID

Every command takes `--database-url` (default: `STRATA_DATABASE_URL`) and `--json`, and
applies the gateway's migrations first. `keys create` prints the key on stdout, alone, and
only this once (`KEY=$(strata keys create --tenant acme)`); the database keeps its hash.
Limits left unset are unlimited; a key's limits and strategy override its tenant's for
that key, and the tenant's limits also cap all its keys together. Running gateways see
changes within their auth cache TTL (5 s by default).

Exit status: 0 done, 1 refused (unknown tenant or key, duplicate tenant, bad value),
2 bad command line or no database URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import asyncpg
import orjson

from strata_gateway.adapters.keystore_pg import KeyRow, KeyStore, StoreError, TenantChanges, TenantRow
from strata_gateway.adapters.migrate import migrate
from strata_gateway.domain.ports import Limits

__all__ = ["main"]

_UNSET: Any = object()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (leave it out for unlimited): {value}")
    return value


def _positive_or_none(text: str) -> int | None:
    return None if text.lower() in {"none", "unlimited"} else _positive(text)


def _text_or_none(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _parser(prog: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", default=None, help="PostgreSQL URL (default: $STRATA_DATABASE_URL)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser = argparse.ArgumentParser(prog=prog, description="Manage Strata tenants and API keys.")
    areas = parser.add_subparsers(dest="area", required=True)

    tenants = areas.add_parser("tenants", help="create, update and list tenants").add_subparsers(
        dest="cmd", required=True
    )
    create = tenants.add_parser("create", parents=[common], help="create a tenant")
    create.add_argument("tenant", help="tenant id (letters, digits, '_', '-', '=')")
    create.add_argument("--name", help="display name (default: the id)")
    for flag in ("--rpm", "--tpm", "--max-concurrency"):
        create.add_argument(flag, type=_positive, help="limit for the whole tenant (default: unlimited)")
    create.add_argument("--strategy", help="default routing strategy of its requests")
    update = tenants.add_parser("update", parents=[common], help="change a tenant ('none' clears a value)")
    update.add_argument("tenant")
    update.add_argument("--name", default=_UNSET)
    for flag in ("--rpm", "--tpm", "--max-concurrency"):
        update.add_argument(flag, type=_positive_or_none, default=_UNSET, help="N, or 'none' for unlimited")
    update.add_argument("--strategy", type=_text_or_none, default=_UNSET, help="strategy, or 'none'")
    tenants.add_parser("list", parents=[common], help="list tenants")

    keys_area = areas.add_parser("keys", help="create, list and revoke API keys")
    keys = keys_area.add_subparsers(dest="cmd", required=True)
    kcreate = keys.add_parser("create", parents=[common], help="create a key (its secret is printed once)")
    kcreate.add_argument("--tenant", required=True, help="owning tenant")
    kcreate.add_argument("--models", help="comma-separated models it may use (default: every model)")
    for flag in ("--rpm", "--tpm", "--max-concurrency"):
        kcreate.add_argument(flag, type=_positive, help="override of the tenant's limit for this key")
    kcreate.add_argument("--strategy", help="default routing strategy (overrides the tenant's)")
    klist = keys.add_parser("list", parents=[common], help="list keys (never their secrets)")
    klist.add_argument("--tenant", help="only this tenant's keys")
    revoke = keys.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("key_id", help="the <id> of sk-strata-<id>-…")
    return parser


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def _tenant_fields(row: TenantRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "strategy": row.default_strategy, **_limit_fields(row.limits),
            "created_at": row.created_at}  # fmt: skip


def _key_fields(row: KeyRow) -> dict[str, Any]:
    return {
        "id": row.id, "tenant": row.tenant_id, "prefix": row.prefix, "models": row.allowed_models,
        "strategy": row.default_strategy, **_limit_fields(row.limits), "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }  # fmt: skip


def _limit_fields(limits: Limits) -> dict[str, Any]:
    return {"rpm": limits.rpm, "tpm": limits.tpm, "max_concurrency": limits.max_concurrency}


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(orjson.dumps(row, default=str).decode())
        return
    if not rows:
        print("(none)")
        return
    header = [name.upper() for name in rows[0]]
    cells = [["all" if k == "models" and v is None else _cell(v) for k, v in row.items()] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    for line in [header, *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


async def _run(args: argparse.Namespace, url: str) -> int:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        store = KeyStore(pool)
        limits = Limits(getattr(args, "rpm", None), getattr(args, "tpm", None), getattr(args, "max_concurrency", None))
        match (args.area, args.cmd):
            case ("tenants", "create"):
                tenant = await store.create_tenant(
                    args.tenant, args.name, default_strategy=args.strategy, limits=limits
                )
                _print([_tenant_fields(tenant)], args.json)
            case ("tenants", "update"):
                given = {"name": args.name, "default_strategy": args.strategy, "rpm": args.rpm, "tpm": args.tpm,
                         "max_concurrency": args.max_concurrency}  # fmt: skip
                changes = cast("TenantChanges", {k: v for k, v in given.items() if v is not _UNSET})
                _print([_tenant_fields(await store.update_tenant(args.tenant, changes))], args.json)
            case ("tenants", "list"):
                _print([_tenant_fields(t) for t in await store.list_tenants()], args.json)
            case ("keys", "create"):
                models = None if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
                row, key = await store.create_key(
                    args.tenant, allowed_models=models, default_strategy=args.strategy, limits=limits
                )
                if args.json:
                    print(orjson.dumps({**_key_fields(row), "key": key.key}, default=str).decode())
                else:
                    print(key.key)
                    print(f"created key {row.id} for tenant {row.tenant_id}: the key above is shown only once, "
                          "store it now", file=sys.stderr)  # fmt: skip
            case ("keys", "list"):
                _print([_key_fields(k) for k in await store.list_keys(args.tenant)], args.json)
            case ("keys", "revoke"):
                _print([_key_fields(await store.revoke_key(args.key_id))], args.json)
            case _:  # pragma: no cover - argparse allows nothing else
                raise AssertionError(f"unknown command {args.area} {args.cmd}")
    finally:
        await pool.close()
    return 0


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m strata_gateway.admin") -> int:
    """Run one admin command; returns the exit status (see the module docstring).

    Args:
        argv: the arguments (default: sys.argv[1:]), e.g. `["keys", "list", "--tenant", "acme"]`.
        prog: the program name shown in usage lines (`strata` when called from the strata CLI).
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    url = args.database_url or os.environ.get("STRATA_DATABASE_URL")
    if not url:
        parser.error("no database: pass --database-url or set STRATA_DATABASE_URL")
    try:
        return asyncio.run(_run(args, url))
    except StoreError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"{prog}: database error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
