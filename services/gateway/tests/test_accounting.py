"""Accounting: usage records and outcomes of finished requests go out in batches, none lost."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from strata_contracts.messages import RouteOutcome, UsageRecord, decode, encode
from strata_gateway.domain.errors import gateway_timeout
from strata_gateway.domain.exchange import Exchange
from strata_gateway.domain.ports import Principal, UsageEntry
from strata_gateway.domain.requests import Endpoint, parse_request
from strata_gateway.handlers.accounting import Accounting

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def record_many(self, entries: Sequence[UsageEntry]) -> None:
        self.batches.append([decode(UsageRecord, e.payload).request_id for e in entries])
        if self.fail:
            raise RuntimeError("sink broke")


def finished(request_id: str, engine_id: str | None = "e0") -> Exchange:
    exchange = Exchange(request_id=request_id, endpoint=Endpoint.CHAT)
    exchange.principal = Principal(tenant_id="t", key_id="k")
    exchange.request = parse_request(Endpoint.CHAT, BODY)
    exchange.engine_id = engine_id
    exchange.end()
    return exchange


async def test_requests_finishing_together_share_one_batch_and_each_outcome_is_published() -> None:
    sink, outcomes, writes = Sink(), list[RouteOutcome](), list[int]()

    async def publish(batch: Sequence[tuple[bytes, Mapping[str, str]]]) -> None:
        writes.append(len(batch))
        outcomes.extend(decode(RouteOutcome, outcome) for outcome, _ in batch)

    accounting = Accounting(sink, publish, linger_s=0.05)
    for i in range(10):
        accounting.submit(finished(f"r{i}", engine_id=None if i == 3 else "e0"))
    assert accounting.pending == 10
    await asyncio.sleep(0.2)
    assert sink.batches == [[f"r{i}" for i in range(10)]]
    assert sorted(o.request_id for o in outcomes) == sorted(f"r{i}" for i in range(10) if i != 3)  # r3: no engine
    assert writes == [9]  # the batch's outcomes in one publish
    accounting.submit(finished("late"))
    await asyncio.sleep(0.2)
    assert sink.batches[1] == ["late"]
    await accounting.close()


async def test_close_sends_what_is_queued_without_waiting_for_the_linger() -> None:
    sink = Sink()

    async def publish(_batch: Sequence[tuple[bytes, Mapping[str, str]]]) -> None:
        return None

    accounting = Accounting(sink, publish, linger_s=3600)
    accounting.submit(finished("a"))
    accounting.submit(finished("b"))
    await asyncio.wait_for(accounting.close(), 5)
    assert sink.batches == [["a", "b"]]
    assert accounting.pending == 0


async def test_a_broken_record_or_sink_costs_nothing_but_itself() -> None:
    sink, outcomes = Sink(fail=True), list[str]()

    async def publish(batch: Sequence[tuple[bytes, Mapping[str, str]]]) -> None:
        request_ids = [decode(RouteOutcome, outcome).request_id for outcome, _ in batch]
        if "x" in request_ids:
            raise ConnectionError("nats gone")
        outcomes.extend(request_ids)

    accounting = Accounting(sink, publish, linger_s=0.01)
    broken = finished("broken")
    broken.request = None  # a bug: no usage record can be built for it
    for exchange in (finished("a"), broken, finished("b")):
        accounting.submit(exchange)
    await asyncio.wait_for(accounting.close(), 5)
    assert sink.batches == [["a", "b"]]  # the sink raised, yet outcomes still went out
    assert outcomes == ["a", "broken", "b"]
    accounting = Accounting(Sink(), publish, linger_s=0.01)
    accounting.submit(finished("x"))
    accounting.submit(finished("y"))
    await asyncio.wait_for(accounting.close(), 5)  # a failing outcome publish is logged, not raised
    assert outcomes == ["a", "broken", "b"]


def test_wire_forms_are_exactly_what_the_contracts_encode() -> None:
    ok = finished("ok")
    ok.strategy, ok.first_byte_s, ok.trace_headers = "random", 0.01, {"traceparent": "00-ab-cd-01"}
    ok.client_request_id = "the-clients-own"
    failed = finished("failed", engine_id=None)
    failed.fail(gateway_timeout("engine too slow"))
    for exchange in (ok, failed):
        entry = exchange.usage_entry()
        record = decode(UsageRecord, entry.payload)  # validates
        assert encode(record) == entry.payload  # same fields, order and omissions as the contract's encoder
        assert (entry.request_id, entry.tenant_id) == (record.request_id, record.tenant_id)
    assert ok.usage_entry().trace == {"traceparent": "00-ab-cd-01"}
    assert decode(UsageRecord, ok.usage_entry().payload).client_request_id == "the-clients-own"
    assert decode(UsageRecord, failed.usage_entry().payload).status == 504
    payload = ok.outcome_payload()
    assert payload is not None
    outcome = decode(RouteOutcome, payload)
    assert encode(outcome) == payload
    assert (outcome.engine_id, outcome.strategy, outcome.decision_id) == ("e0", "random", None)
    assert failed.outcome_payload() is None
