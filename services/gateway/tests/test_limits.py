"""Rate limits: the pure arithmetic, then NatsLimiter replicas sharing one real NATS.

Replicas are separate Broker connections with their own NatsLimiter, as two gateway
processes would be; they share an injected clock, so a "minute" of traffic takes no
real minute and the window never rolls over by accident.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from strata_gateway.adapters.limits_nats import LIMITS_BUCKET, NatsLimiter
from strata_gateway.domain.limits import (
    Reject,
    ScopeDoc,
    ScopedPrincipal,
    admit_batch,
    rate_limited,
    retry_after_s,
    scopes_of,
    window_of,
)
from strata_gateway.domain.ports import Admission, GatewayError, Limits, Principal
from strata_runtime import Broker
from strata_testing import EmbeddedNats, poll_until

T0 = 1_800_000_000.0  # a window boundary (divisible by 60)


class FakeClock:
    """Unix time that only moves when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def key_principal(limits: Limits, tenant_limits: Limits | None = None, tenant: str | None = None) -> ScopedPrincipal:
    return ScopedPrincipal(
        tenant_id=tenant or f"t{uuid.uuid4().hex[:10]}",
        key_id=uuid.uuid4().hex[:12],
        limits=limits,
        tenant_limits=tenant_limits or Limits(),
    )


# --- pure arithmetic ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "window", "retry"),
    [(T0, 30_000_000, 60), (T0 + 0.5, 30_000_000, 60), (T0 + 59.2, 30_000_000, 1), (T0 + 59.99, 30_000_000, 1)],
)
def test_windows_are_epoch_aligned_and_retry_after_counts_to_the_reset(now: float, window: int, retry: int) -> None:
    assert window_of(now, 60.0) == window
    assert retry_after_s(now, window_of(now, 60.0), 60.0) == retry


def test_batch_admits_in_order_up_to_the_limit_and_counts_nothing_for_the_refused() -> None:
    doc = ScopeDoc(window=30_000_000, requests=57)

    new, admitted, reject = admit_batch(
        doc, Limits(rpm=60), wanted=5, replica="a", mine=0, pending_window=-1, pending_requests=0,
        pending_tokens=0, now=T0 + 10, window_s=60.0, lease_s=30.0,
    )  # fmt: skip

    assert (admitted, new.requests) == (3, 60)
    assert reject == Reject("requests", 60, 50)
    assert doc.requests == 57  # the input is not modified


def test_new_window_resets_counts_but_keeps_leases_and_drops_expired_ones() -> None:
    doc = ScopeDoc(window=30_000_000, requests=60, tokens=900, inflight={"b": (2, T0 + 65), "c": (1, T0 + 61)})

    new, admitted, reject = admit_batch(
        doc, Limits(rpm=60, max_concurrency=3), wanted=2, replica="a", mine=0, pending_window=30_000_000,
        pending_requests=4, pending_tokens=100, now=T0 + 62, window_s=60.0, lease_s=30.0,
    )  # fmt: skip

    assert (new.window, new.requests, new.tokens) == (30_000_001, 1, 0)  # old pending deltas dropped
    assert admitted == 1
    assert reject is not None
    assert reject.kind == "concurrency"
    assert new.inflight == {"b": (2, T0 + 65), "a": (1, T0 + 92)}


def test_tokens_are_post_paid_and_refuse_once_reached() -> None:
    doc = ScopeDoc(window=30_000_000, requests=1, tokens=0)

    new, admitted, _ = admit_batch(
        doc, Limits(tpm=100), wanted=1, replica="a", mine=0, pending_window=30_000_000, pending_requests=0,
        pending_tokens=150, now=T0 + 1, window_s=60.0, lease_s=30.0,
    )  # fmt: skip

    assert admitted == 0
    assert new.tokens == 150


def test_scope_doc_round_trips_and_garbage_reads_as_empty() -> None:
    doc = ScopeDoc(7, 3, 40, {"gw-1": (2, 123.5)})

    assert ScopeDoc.decode(doc.encode()) == doc
    assert ScopeDoc.decode(b"{not json") == ScopeDoc()
    assert ScopeDoc.decode(b'{"w": 1}') == ScopeDoc()


def test_scopes_key_and_tenant_unlimited_left_out() -> None:
    scoped = ScopedPrincipal(tenant_id="acme", key_id="k1", limits=Limits(rpm=5), tenant_limits=Limits(tpm=9))
    plain_tenant = Principal(tenant_id="acme", key_id=None, limits=Limits(max_concurrency=2))

    assert [(s.name, s.limits) for s in scopes_of(scoped)] == [
        ("key.k1", Limits(rpm=5)),
        ("tenant.acme", Limits(tpm=9)),
    ]
    assert [s.name for s in scopes_of(plain_tenant)] == ["tenant.acme"]
    assert scopes_of(Principal(tenant_id="acme", key_id="k1")) == []
    assert scopes_of(Principal(tenant_id="a.b c", key_id=None, limits=Limits(rpm=1)))[0].name.startswith("tenant.h")


def test_429_carries_the_openai_envelope_and_retry_after() -> None:
    error = rate_limited(Reject("tokens", 1000, 17), "key")

    assert (error.status, error.type, error.code) == (429, "rate_limit_error", "rate_limit_exceeded")
    assert error.headers["retry-after"] == "17"
    assert error.headers["x-ratelimit-limit-tokens"] == "1000"
    assert "tokens per minute" in error.message


# --- two replicas over NATS -----------------------------------------------------------------


@dataclass
class Fleet:
    replicas: list[NatsLimiter]
    brokers: list[Broker]
    clock: FakeClock


async def start_fleet(url: str, n: int = 2, **options: float) -> Fleet:
    clock = FakeClock(T0 + 0.5)
    brokers = [await Broker.connect(url, f"gateway-{i}") for i in range(n)]
    run = uuid.uuid4().hex[:6]
    limiters = [NatsLimiter(b, f"gw-{run}-{i}", clock=clock, **options) for i, b in enumerate(brokers)]  # type: ignore[arg-type]
    for limiter in limiters:
        await limiter.start()
    return Fleet(limiters, brokers, clock)


async def stop_fleet(fleet: Fleet) -> None:
    for limiter in fleet.replicas:
        await limiter.close()
    for broker in fleet.brokers:
        await broker.close()


@pytest_asyncio.fixture
async def fleet(nats_url: str) -> AsyncIterator[Fleet]:
    fleet = await start_fleet(nats_url, op_timeout_s=5.0)
    try:
        yield fleet
    finally:
        await stop_fleet(fleet)


async def try_admit(limiter: NatsLimiter, principal: Principal) -> Admission | GatewayError:
    try:
        return await limiter.admit(principal)
    except GatewayError as exc:
        return exc


async def shared_doc(broker: Broker, name: str) -> ScopeDoc:
    entry = await (await broker.kv(LIMITS_BUCKET)).get(name)
    assert entry.value is not None
    return ScopeDoc.decode(entry.value)


def fail_open_count() -> float:
    return sum(
        REGISTRY.get_sample_value("strata_gateway_limiter_fail_open_total", {"reason": r}) or 0.0
        for r in ("disconnected", "timeout", "error", "contention", "unbound")
    )


async def test_rpm_is_enforced_across_two_replicas(fleet: Fleet) -> None:
    principal = key_principal(Limits(rpm=60))
    failed_open = fail_open_count()
    outcomes: list[Admission | GatewayError] = []

    for _ in range(12):  # 120 admits in 12 concurrent rounds, 0.25 s of (fake) time apart
        round_ = [try_admit(fleet.replicas[i % 2], principal) for i in range(10)]
        outcomes += await asyncio.gather(*round_)
        fleet.clock.advance(0.25)

    admitted = [o for o in outcomes if not isinstance(o, GatewayError)]
    refused = [o for o in outcomes if isinstance(o, GatewayError)]
    print(f"RPM=60, 120 admits over 2 replicas: {len(admitted)} admitted")
    assert 58 <= len(admitted) <= 62
    assert fail_open_count() == failed_open
    assert all(e.status == 429 and e.code == "rate_limit_exceeded" for e in refused)
    assert {int(e.headers["retry-after"]) for e in refused} <= set(range(56, 60))
    assert (await shared_doc(fleet.brokers[0], f"key.{principal.key_id}")).requests == len(admitted)


async def test_a_burst_from_both_replicas_at_once_admits_exactly_the_limit(fleet: Fleet) -> None:
    principal = key_principal(Limits(rpm=50))

    outcomes = await asyncio.gather(*(try_admit(fleet.replicas[i % 2], principal) for i in range(200)))

    assert sum(not isinstance(o, GatewayError) for o in outcomes) == 50


async def test_the_next_window_admits_again(fleet: Fleet) -> None:
    principal = key_principal(Limits(rpm=2))
    for limiter in fleet.replicas:
        await limiter.admit(principal)
    refused = await try_admit(fleet.replicas[0], principal)
    assert isinstance(refused, GatewayError)

    fleet.clock.advance(60.0)

    assert not isinstance(await try_admit(fleet.replicas[1], principal), GatewayError)


async def test_tokens_settled_on_one_replica_limit_the_other(fleet: Fleet) -> None:
    principal = key_principal(Limits(tpm=100))
    admission = await fleet.replicas[0].admit(principal)
    admission.settle(60, 50)
    admission.settle(60, 50)  # idempotent
    admission.release()

    async def tokens() -> bool:
        return (await shared_doc(fleet.brokers[1], f"key.{principal.key_id}")).tokens == 110

    await poll_until(tokens, what="settled tokens in the shared document")
    refused = await try_admit(fleet.replicas[1], principal)
    assert isinstance(refused, GatewayError)
    assert "tokens per minute" in refused.message


async def test_concurrency_is_shared_and_released(fleet: Fleet) -> None:
    a, b = fleet.replicas
    principal = key_principal(Limits(max_concurrency=2))
    first = await a.admit(principal)
    await b.admit(principal)

    refused = await try_admit(b, principal)
    assert isinstance(refused, GatewayError)
    assert refused.headers["retry-after"] == "1"

    first.release()
    first.release()  # idempotent

    async def admitted_on_b() -> Admission | None:
        outcome = await try_admit(b, principal)
        return None if isinstance(outcome, GatewayError) else outcome

    await poll_until(admitted_on_b, what="a slot freed on replica a admits on replica b")


async def test_slots_of_a_dead_replica_come_back_after_its_lease(nats_url: str) -> None:
    fleet = await start_fleet(nats_url, op_timeout_s=5.0, lease_s=30.0)
    principal = key_principal(Limits(max_concurrency=1))
    try:
        await fleet.replicas[0].admit(principal)
        await fleet.brokers[0].client.close()  # replica 0 dies holding the slot (no release, no close)
        assert isinstance(await try_admit(fleet.replicas[1], principal), GatewayError)

        fleet.clock.advance(31.0)

        assert not isinstance(await try_admit(fleet.replicas[1], principal), GatewayError)
    finally:
        await stop_fleet(fleet)


async def test_tenant_limit_caps_all_its_keys_and_refunds_the_key(fleet: Fleet) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    first = key_principal(Limits(rpm=5), Limits(rpm=6), tenant)
    second = key_principal(Limits(rpm=5), Limits(rpm=6), tenant)
    for _ in range(5):
        await fleet.replicas[0].admit(first)
    await fleet.replicas[1].admit(second)

    refused = await try_admit(fleet.replicas[1], second)

    assert isinstance(refused, GatewayError)
    assert "tenant" in refused.message

    async def refunded() -> bool:
        return (await shared_doc(fleet.brokers[0], f"key.{second.key_id}")).requests == 1

    await poll_until(refunded, what="the refused request is not counted on its key")


async def test_fails_open_to_per_replica_counts_when_nats_is_down(tmp_path_factory: pytest.TempPathFactory) -> None:
    with EmbeddedNats(tmp_path_factory.mktemp("nats-limits")) as url:
        fleet = await start_fleet(url, n=1, op_timeout_s=0.2)
        limiter, broker = fleet.replicas[0], fleet.brokers[0]
        principal = key_principal(Limits(rpm=3))
        await limiter.admit(principal)
    try:
        await poll_until(lambda: asyncio.sleep(0, result=not broker.connected), what="disconnect noticed")
        before = fail_open_count()

        outcomes = [await try_admit(limiter, principal) for _ in range(4)]

        assert [isinstance(o, GatewayError) for o in outcomes] == [False, False, True, True]
        assert fail_open_count() == before + 4
    finally:
        await stop_fleet(fleet)


async def test_unlimited_principal_needs_no_nats(fleet: Fleet) -> None:
    await fleet.brokers[0].client.close()

    admission = await asyncio.wait_for(fleet.replicas[0].admit(Principal(tenant_id="open", key_id=None)), 1.0)

    admission.settle(10, 10)
    admission.release()
