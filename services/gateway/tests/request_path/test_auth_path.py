"""The request path with the real ports: PostgreSQL keys, the NATS limiter, JetStream usage records."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import openai
import pytest

from strata_contracts import subjects
from strata_contracts.messages import UsageRecord, decode
from strata_gateway.adapters.keystore_pg import KeyStore
from strata_gateway.adapters.migrate import migrate
from strata_gateway.domain.ports import Limits
from strata_runtime import Broker
from strata_testing import poll_until

pytestmark = pytest.mark.integration
PROMPT = [{"role": "user", "content": "hi"}]


async def test_keys_models_and_limits_are_enforced_and_usage_published(
    start_gateway: Callable[..., Awaitable[Any]],
    fake_engine: Callable[..., Awaitable[Any]],
    register: Callable[..., Awaitable[str]],
    broker: Broker,
    postgres_url: str,
    model: str,
) -> None:
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        store, tenant = KeyStore(pool), f"t-{uuid.uuid4().hex[:8]}"
        await store.create_tenant(tenant, limits=Limits(rpm=3))
        _, key = await store.create_key(tenant)
        _, narrow = await store.create_key(tenant, allowed_models=["some-other-model"])
    finally:
        await pool.close()
    records: list[UsageRecord] = []

    async def collect(msg: Any) -> None:
        records.append(decode(UsageRecord, msg.data))

    subscription = await broker.client.subscribe(subjects.usage(tenant), cb=collect)
    await register((await fake_engine(model)).url, model)
    gateway = await start_gateway(real_ports=True, database_url=postgres_url)

    def client(api_key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=gateway.v1, api_key=api_key, max_retries=0)

    async with client("sk-strata-nope") as anonymous, client(key.key) as good, client(narrow.key) as limited:
        with pytest.raises(openai.AuthenticationError):
            await anonymous.chat.completions.create(model=model, messages=PROMPT)
        with pytest.raises(openai.PermissionDeniedError):
            await limited.chat.completions.create(model=model, messages=PROMPT)
        for _ in range(3):
            await good.chat.completions.create(model=model, messages=PROMPT)
        with pytest.raises(openai.RateLimitError) as caught:
            await good.chat.completions.create(model=model, messages=PROMPT)
    assert int(caught.value.response.headers["retry-after"]) >= 1

    async def published() -> bool:
        return len(records) >= 3

    await poll_until(published, what="three usage records on JetStream")
    await subscription.unsubscribe()
    assert {(r.tenant_id, r.status, r.completion_tokens) for r in records} == {(tenant, 200, 3)}
