"""Broker against a real embedded NATS: typed pub/sub, request/reply, JetStream, tracing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js.errors import NoStreamResponseError
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from strata_contracts import subjects
from strata_contracts.messages import Contract, EngineLoad, KvLookupReply, KvLookupRequest, PrefixMatch, UsageRecord
from strata_runtime import Broker
from strata_runtime.messaging import JetStreamPipeline, pub_frame, write_frames

LOAD = EngineLoad(engine_id="e1", seq=1, ts=1.0, running=2, waiting=0, kv_usage=0.5, prompt_tps=1, generation_tps=2)


@pytest.fixture
async def broker(nats_url: str) -> AsyncIterator[Broker]:
    broker = await Broker.connect(nats_url, "test")
    yield broker
    await broker.close()


async def test_publish_subscribe_carries_trace_context(broker: Broker, spans: InMemorySpanExporter) -> None:
    received: asyncio.Queue[tuple[EngineLoad, Msg]] = asyncio.Queue()

    async def handler(message: EngineLoad, msg: Msg) -> None:
        await received.put((message, msg))

    await broker.subscribe(subjects.ENGINE_LOAD_ALL, EngineLoad, handler)
    with trace.get_tracer("test").start_as_current_span("producer") as producer:
        await broker.publish(subjects.engine_load("e1"), LOAD)
    message, msg = await asyncio.wait_for(received.get(), 5)
    assert message == LOAD
    assert msg.headers is not None
    assert f"{producer.get_span_context().trace_id:032x}" in msg.headers["traceparent"]
    consumer = next(s for s in spans.get_finished_spans() if s.name.endswith("process"))
    assert consumer.context.trace_id == producer.get_span_context().trace_id
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.get_span_context().span_id


async def test_invalid_message_is_skipped_and_subscription_survives(broker: Broker) -> None:
    received: asyncio.Queue[EngineLoad] = asyncio.Queue()

    async def handler(message: EngineLoad, _: Msg) -> None:
        await received.put(message)

    await broker.subscribe(subjects.engine_load("e2"), EngineLoad, handler)
    await broker.client.publish(subjects.engine_load("e2"), b'{"engine_id": "e2", "running": -1}')
    await broker.client.publish(subjects.engine_load("e2"), b"not json")
    await broker.publish(subjects.engine_load("e2"), LOAD)
    assert await asyncio.wait_for(received.get(), 5) == LOAD
    assert received.empty()


async def test_request_reply(broker: Broker) -> None:
    async def lookup(request: KvLookupRequest, _: Msg) -> Contract:
        return KvLookupReply(matches=[PrefixMatch(holder="e1", tier="engine", blocks=len(request.block_keys))])

    await broker.subscribe(subjects.KV_LOOKUP, KvLookupRequest, lookup, queue="kvmeta")
    reply = await broker.request(subjects.KV_LOOKUP, KvLookupRequest(model="m", block_keys=[1, 2, 3]), KvLookupReply, 5)
    assert reply.matches[0].blocks == 3


async def test_jetstream_publish_is_deduplicated_by_msg_id(broker: Broker) -> None:
    await broker.ensure_stream(subjects.USAGE_STREAM, [subjects.USAGE_ALL])
    await broker.ensure_stream(subjects.USAGE_STREAM, [subjects.USAGE_ALL])  # idempotent
    record = UsageRecord(
        request_id="r-1",
        tenant_id="acme",
        model="m",
        endpoint="/v1/completions",
        stream=False,
        status=200,
        prompt_tokens=3,
        completion_tokens=4,
        latency_ms=5.0,
        started_at=1.0,
    )
    first = await broker.publish_js(subjects.usage("acme"), record, msg_id=record.request_id)
    second = await broker.publish_js(subjects.usage("acme"), record, msg_id=record.request_id)
    assert second.duplicate
    assert first.seq == second.seq


async def test_key_value_bucket_created_once(broker: Broker) -> None:
    kv = await broker.kv(subjects.ENGINE_REGISTRY_BUCKET)
    await kv.put("e1", b"x")
    again = await broker.kv(subjects.ENGINE_REGISTRY_BUCKET)
    assert (await again.get("e1")).value == b"x"


async def test_connect_failure_is_a_clear_error() -> None:
    from strata_testing import free_port

    with pytest.raises(ConnectionError, match="cannot connect to NATS"):
        await Broker.connect(f"nats://127.0.0.1:{free_port()}", "test", connect_timeout=0.5)


async def test_pipeline_acks_many_in_flight_dedups_and_fails_clearly(broker: Broker) -> None:
    await broker.ensure_stream(subjects.USAGE_STREAM, [subjects.USAGE_ALL])
    pipeline = JetStreamPipeline(broker.client, timeout_s=0.3)
    await pipeline.start()
    try:
        subject = subjects.usage("pipe")
        acks = await asyncio.gather(
            *(pipeline.publish(subject, b"%d" % i, {"Nats-Msg-Id": f"pipe-{i}"}) for i in range(50))
        )
        seqs = sorted(ack.seq for ack in acks)
        assert seqs == list(range(seqs[0], seqs[0] + 50))  # all stored, each once
        assert not any(ack.duplicate for ack in acks)
        again = await pipeline.publish(subject, b"7", {"Nats-Msg-Id": "pipe-7"})
        assert again.duplicate
        assert again.seq == acks[7].seq  # the first copy, not a new message
        with pytest.raises(NoStreamResponseError):  # nothing captures this subject
            await pipeline.publish("strata.nothing.here", b"x", {})
        silent = await broker.client.subscribe("strata.silent.stream")  # a responder that never acks
        with pytest.raises(TimeoutError):
            await pipeline.publish("strata.silent.stream", b"x", {})
        await silent.unsubscribe()
    finally:
        await pipeline.close()


def test_publish_frames_are_the_nats_protocol_byte_for_byte() -> None:
    # Golden vectors: PUB/HPUB as the NATS client protocol defines them (sizes in bytes).
    assert pub_frame("a.b", b"hi") == b"PUB a.b 2\r\nhi\r\n"
    assert pub_frame("a.b", b"", reply="_INBOX.x.1") == b"PUB a.b _INBOX.x.1 0\r\n\r\n"
    headers = b"NATS/1.0\r\nNats-Msg-Id: r-1\r\n\r\n"  # 30 bytes; with the payload 32
    assert pub_frame("a.b", b"{}", reply="in.2", headers={"Nats-Msg-Id": "r-1"}) == (
        b"HPUB a.b in.2 30 32\r\n" + headers + b"{}\r\n"
    )
    for subject, reply in (("", ""), ("a b", ""), ("a", "in box"), ("a\r\nPUB x", "")):
        with pytest.raises(ValueError, match="not a NATS subject"):  # it would break the whole connection
            pub_frame(subject, b"x", reply=reply)
    broken = pub_frame("a", b"x", headers={"traceparent": "00-a\r\nInjected: yes"})  # no header smuggling
    assert broken == b"HPUB a 46 47\r\nNATS/1.0\r\ntraceparent: 00-a  Injected: yes\r\n\r\nx\r\n"


async def test_frames_written_at_once_arrive_with_their_headers_and_acks(broker: Broker) -> None:
    received: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        await received.put(msg)

    await broker.client.subscribe("frames.>", cb=on_message)
    frames = [
        pub_frame(f"frames.{i}", b"%d" % i, headers={"traceparent": f"t{i}"} if i % 2 else None) for i in range(5)
    ]
    await write_frames(broker.client, frames)
    got = [await asyncio.wait_for(received.get(), 5) for _ in range(5)]
    assert [(m.subject, m.data) for m in got] == [(f"frames.{i}", b"%d" % i) for i in range(5)]
    assert [m.headers for m in got] == [None, {"traceparent": "t1"}, None, {"traceparent": "t3"}, None]

    await broker.ensure_stream(subjects.USAGE_STREAM, [subjects.USAGE_ALL])
    pipeline = JetStreamPipeline(broker.client, timeout_s=2)
    await pipeline.start()
    try:
        subject = subjects.usage("many")
        messages = [(subject, b"%d" % i, {"Nats-Msg-Id": f"many-{i % 3}"}) for i in range(4)]  # many-0 twice
        acks = [await ack for ack in await pipeline.send_many(messages)]
        assert [ack.duplicate for ack in acks] == [None, None, None, True]
        assert acks[3].seq == acks[0].seq
        with pytest.raises(NoStreamResponseError):
            await (await pipeline.send_many([("strata.nothing.here", b"x", {})]))[0]
    finally:
        await pipeline.close()
    await broker.client.close()
    with pytest.raises(ConnectionClosedError):
        await write_frames(broker.client, frames)
