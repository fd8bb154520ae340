"""Traffic through the gateway with a freshly created key, then its rows in the usage ledger."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
from dataclasses import dataclass, field

import aiohttp
import asyncpg  # type: ignore[import-untyped, unused-ignore]
import orjson

from strata_testing.poll import PollTimeout, poll_until

__all__ = ["GatewayReport", "create_demo_key", "exercise_gateway", "run_gateway_demo"]

_SYSTEM = "You are the Strata demo assistant. Keep answers short. " * 10


@dataclass
class GatewayReport:
    """What the gateway demo saw."""

    responses: list[dict[str, object]] = field(default_factory=list)  # per request: id, engine, tokens
    unauthorized: dict[str, object] = field(default_factory=dict)
    ledger_rows: int = 0


def _admin(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "strata_gateway.admin", *args, "--database-url", database_url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def create_demo_key(database_url: str) -> str:
    """Create tenant `demo` (if missing) and a new key for it; returns the key."""
    _admin(database_url, "tenants", "create", "demo")  # fails harmlessly when it exists
    created = _admin(database_url, "keys", "create", "--tenant", "demo", "--json")
    if created.returncode != 0:
        raise RuntimeError(f"cannot create a demo key: {created.stderr.strip()}")
    return str(orjson.loads(created.stdout.strip().splitlines()[-1])["key"])


async def _chat(
    session: aiohttp.ClientSession, url: str, key: str, model: str, turn: int, *, stream: bool
) -> dict[str, object]:
    request_id = f"demo-{secrets.token_hex(6)}"
    body = {
        "model": model,
        "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": f"Question {turn}?"}],
        "max_tokens": 12,
        "stream": stream,
    }
    headers = {"authorization": f"Bearer {key}", "x-request-id": request_id}
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        if stream:
            chunks = [line async for line in response.content if line.startswith(b"data: ")]
            shape = f"{len(chunks)} SSE events"
        else:
            usage = (await response.json())["usage"]
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            shape = f"tokens {usage['prompt_tokens']}+{usage['completion_tokens']} cached={cached}"
        return {
            "request_id": response.headers.get("x-request-id"),
            "status": response.status,
            "engine": response.headers.get("x-strata-engine"),
            "strategy": response.headers.get("x-strata-strategy"),
            "shape": shape,
        }


async def exercise_gateway(gateway_url: str, database_url: str, key: str, model: str) -> GatewayReport:
    """Send chat requests (streamed and not) through the gateway; wait for their ledger rows."""
    report = GatewayReport()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for turn in range(4):
            report.responses.append(await _chat(session, gateway_url, key, model, turn, stream=turn % 2 == 1))
        bad = {"authorization": "Bearer sk-strata-nope", "content-type": "application/json"}
        async with session.post(f"{gateway_url}/v1/chat/completions", data=b"{}", headers=bad) as response:
            report.unauthorized = {"status": response.status, **(await response.json())}
    ids = [str(r["request_id"]) for r in report.responses]

    async def recorded() -> bool:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            report.ledger_rows = int(
                await conn.fetchval("SELECT count(*) FROM usage WHERE client_request_id = ANY($1::text[])", ids)
            )
        finally:
            await conn.close()
        return report.ledger_rows == len(ids)

    with contextlib.suppress(PollTimeout):  # the report shows how many arrived
        await poll_until(recorded, timeout=20, what="usage rows in the ledger")
    return report


def run_gateway_demo(gateway_url: str, database_url: str, model: str) -> GatewayReport:
    """Synchronous wrapper for the CLI."""
    key = create_demo_key(database_url)
    return asyncio.run(exercise_gateway(gateway_url, database_url, key, model))
