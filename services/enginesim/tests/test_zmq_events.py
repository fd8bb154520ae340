"""The simulated engine's ZMQ KV-event publisher, against real sockets (and real vLLM)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from strata_contracts.vllm_kv_events import (
    SEQ_END,
    VllmAllBlocksCleared,
    VllmBlockRemoved,
    VllmBlockStored,
    VllmEventBatch,
    VllmKvEvent,
    WireShape,
    decode_batch,
    decode_seq,
    encode_batch,
    encode_seq,
)
from strata_enginesim.adapters.zmq_events import ZmqKvEventPublisher, is_bind_endpoint, offset_endpoint
from strata_testing import free_port, wait_until
from strata_testing.vllm_env import require_vllm_python

TOPIC = "kv@127.0.0.1:8000@tiny"


def _step(i: int) -> list[VllmKvEvent]:
    """The events of engine step `i`: distinct per step, every event kind."""
    return [
        VllmBlockStored([1000 + i, 2**64 - 1 - i], i or None, list(range(8)), 4, extra_keys=[None, None], group_idx=0),
        VllmBlockRemoved([i], group_idx=0),
        VllmAllBlocksCleared(),
    ]


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def publisher_factory() -> Iterator[list[ZmqKvEventPublisher]]:
    """Publishers created by a test, closed afterwards whatever happened."""
    made: list[ZmqKvEventPublisher] = []
    yield made
    for publisher in made:
        publisher.close()


def _publisher(made: list[ZmqKvEventPublisher], endpoint: str, **kwargs: Any) -> ZmqKvEventPublisher:
    publisher = ZmqKvEventPublisher(endpoint, topic=TOPIC, **kwargs)
    made.append(publisher)
    return publisher


def _join(publisher: ZmqKvEventPublisher, sub: zmq.Socket[bytes]) -> int:
    """Publish probe batches until `sub` receives one (PUB/SUB slow joiner); return probes sent."""
    sent = 0

    def probe() -> bool:
        nonlocal sent
        publisher.publish_batch(0.0, [VllmAllBlocksCleared()])
        sent += 1
        return bool(sub.poll(50))

    wait_until(probe, timeout=10, interval=0, what="subscriber receives the publisher")
    return sent


def _receive_from(sub: zmq.Socket[bytes], first_seq: int, count: int) -> list[list[bytes]]:
    """The next `count` messages with seq >= first_seq (earlier probes are skipped)."""
    got: list[list[bytes]] = []
    deadline = time.monotonic() + 10
    while len(got) < count:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        assert remaining_ms > 0, f"received only {len(got)} of {count}"
        assert sub.poll(remaining_ms), f"received only {len(got)} of {count}"
        frames = sub.recv_multipart()
        if decode_seq(frames[1]) >= first_seq:
            got.append(frames)
    return got


def _replay(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, start: int) -> list[list[bytes]]:
    """Ask the ROUTER at `endpoint` for batches from `start`; every reply up to the end marker."""
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(endpoint)
    dealer.send_multipart([b"", encode_seq(start)])
    replies: list[list[bytes]] = []
    deadline = time.monotonic() + 10
    while not replies or replies[-1][-2:] != [encode_seq(SEQ_END), b""]:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        assert remaining_ms > 0, f"no end marker after {len(replies)} replies"
        assert dealer.poll(remaining_ms), f"no end marker after {len(replies)} replies"
        replies.append(dealer.recv_multipart())
    dealer.close(linger=0)
    return replies


def _published(publisher: ZmqKvEventPublisher, count: int) -> None:
    wait_until(lambda: publisher.batches_published >= count, timeout=10, what=f"{count} batches published")


@pytest.mark.parametrize("shape", list(WireShape))
def test_subscriber_gets_topic_seq_and_decodable_payload(
    ctx: zmq.Context[zmq.Socket[bytes]], publisher_factory: list[ZmqKvEventPublisher], shape: WireShape
) -> None:
    port = free_port()
    publisher = _publisher(publisher_factory, f"tcp://*:{port}", shape=shape, data_parallel_rank=0)
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    probes = _join(publisher, sub)
    for i in range(3):
        publisher.publish_batch(100.0 + i, _step(i))
    messages = _receive_from(sub, probes, 3)
    assert [m[0] for m in messages] == [TOPIC.encode()] * 3
    assert [decode_seq(m[1]) for m in messages] == [probes, probes + 1, probes + 2]
    assert [decode_batch(m[2]) for m in messages] == [VllmEventBatch(100.0 + i, _step(i), 0) for i in range(3)]
    assert [m[2] for m in messages] == [encode_batch(VllmEventBatch(100.0 + i, _step(i), 0), shape) for i in range(3)]


@pytest.mark.parametrize(("topic_frame", "start"), [(True, 2), (True, 0), (False, 3), (True, 99)])
def test_replay_returns_buffered_batches_from_start_then_end_marker(
    ctx: zmq.Context[zmq.Socket[bytes]], publisher_factory: list[ZmqKvEventPublisher], topic_frame: bool, start: int
) -> None:
    replay = f"tcp://127.0.0.1:{free_port()}"
    publisher = _publisher(
        publisher_factory, f"tcp://*:{free_port()}", replay_endpoint=replay, replay_topic_frame=topic_frame
    )
    for i in range(5):
        publisher.publish_batch(float(i), _step(i))
    _published(publisher, 5)
    replies = _replay(ctx, replay, start)
    topic = [TOPIC.encode()] if topic_frame else []
    expected = [[b"", *topic, encode_seq(s), encode_batch(VllmEventBatch(float(s), _step(s)))] for s in range(start, 5)]
    end = [b"", b"", encode_seq(SEQ_END), b""] if topic_frame else [b"", encode_seq(SEQ_END), b""]
    assert replies == [*expected, end]
    assert publisher.replays_served == 1


def test_replay_buffer_keeps_only_the_last_buffer_steps_batches(
    ctx: zmq.Context[zmq.Socket[bytes]], publisher_factory: list[ZmqKvEventPublisher]
) -> None:
    replay = f"tcp://127.0.0.1:{free_port()}"
    publisher = _publisher(publisher_factory, f"tcp://*:{free_port()}", replay_endpoint=replay, buffer_steps=3)
    for i in range(5):
        publisher.publish_batch(float(i), _step(i))
    _published(publisher, 5)
    assert [decode_seq(r[2]) for r in _replay(ctx, replay, 0)] == [2, 3, 4, SEQ_END]


def test_malformed_replay_request_is_ignored(
    ctx: zmq.Context[zmq.Socket[bytes]], publisher_factory: list[ZmqKvEventPublisher]
) -> None:
    replay = f"tcp://127.0.0.1:{free_port()}"
    publisher = _publisher(publisher_factory, f"tcp://*:{free_port()}", replay_endpoint=replay)
    publisher.publish_batch(1.0, _step(1))
    _published(publisher, 1)
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(replay)
    dealer.send_multipart([encode_seq(0)])  # no empty delimiter: 2 frames at the ROUTER
    assert [decode_seq(r[2]) for r in _replay(ctx, replay, 0)] == [0, SEQ_END]  # still serving
    assert not dealer.poll(0)
    assert publisher.replays_served == 1
    dealer.close(linger=0)


def test_non_wildcard_tcp_endpoint_connects_to_a_binding_subscriber(
    ctx: zmq.Context[zmq.Socket[bytes]], publisher_factory: list[ZmqKvEventPublisher]
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"")
    sub.bind(endpoint)  # would fail with EADDRINUSE had the publisher bound it
    publisher = _publisher(publisher_factory, endpoint)
    probes = _join(publisher, sub)
    publisher.publish_batch(5.0, _step(5))
    [message] = _receive_from(sub, probes, 1)
    assert decode_batch(message[2]) == VllmEventBatch(5.0, _step(5))


@pytest.mark.parametrize(
    ("endpoint", "binds"),
    [
        ("tcp://*:5557", True),
        ("tcp://[::]:5557", True),
        ("ipc:///tmp/kv", True),
        ("inproc://kv", True),
        ("tcp://127.0.0.1:5557", False),
        ("tcp://10.0.0.5:5557", False),
    ],
)
def test_bind_rule_matches_vllm(endpoint: str, binds: bool) -> None:
    assert is_bind_endpoint(endpoint) is binds


@pytest.mark.parametrize(
    ("endpoint", "rank", "expected"),
    [
        ("tcp://*:5557", None, "tcp://*:5557"),
        ("tcp://*:5557", 0, "tcp://*:5557"),
        ("tcp://*:5557", 2, "tcp://*:5559"),
        ("tcp://*:0", 2, "tcp://*:0"),
        ("inproc://kv", 1, "inproc://kv_dp1"),
        (None, 3, None),
    ],
)
def test_dp_rank_offsets_endpoints_like_vllm(endpoint: str | None, rank: int | None, expected: str | None) -> None:
    assert offset_endpoint(endpoint, rank) == expected


def test_ipc_endpoint_cannot_be_offset_by_rank() -> None:
    with pytest.raises(ValueError, match="tcp or inproc"):
        offset_endpoint("ipc:///tmp/kv", 1)


def test_full_queue_drops_batches_but_consumes_their_seq(
    ctx: zmq.Context[zmq.Socket[bytes]], publisher_factory: list[ZmqKvEventPublisher]
) -> None:
    replay = f"tcp://127.0.0.1:{free_port()}"
    publisher = _publisher(publisher_factory, f"tcp://*:{free_port()}", replay_endpoint=replay, max_queue_size=1)
    total = 2000
    for i in range(total):
        publisher.publish_batch(float(i), [VllmAllBlocksCleared()])
    wait_until(lambda: publisher.batches_published + publisher.batches_dropped == total, timeout=10, what="all done")
    seqs = [decode_seq(r[2]) for r in _replay(ctx, replay, 0)][:-1]
    assert len(seqs) == publisher.batches_published
    assert seqs == sorted(set(seqs))  # increasing, with gaps where batches were dropped
    assert seqs[-1] < total
    assert [decode_batch(r[3]).ts for r in _replay(ctx, replay, 0)[:-1]] == [float(s) for s in seqs]


def test_close_is_idempotent_stops_the_thread_and_frees_the_ports(
    publisher_factory: list[ZmqKvEventPublisher],
) -> None:
    endpoint, replay = f"tcp://*:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    before = set(threading.enumerate())
    publisher = ZmqKvEventPublisher(endpoint, replay)
    [thread] = set(threading.enumerate()) - before
    publisher.publish_batch(1.0, _step(1))
    publisher.close()
    publisher.close()
    assert publisher.closed
    assert not thread.is_alive()
    assert publisher.batches_published == 1, "queued batches are flushed before closing"
    with pytest.raises(RuntimeError, match="closed"):
        publisher.publish_batch(2.0, _step(2))
    _publisher(publisher_factory, endpoint, replay_endpoint=replay)  # both ports can be bound again


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="max_queue_size must be >= 1"):
        ZmqKvEventPublisher("tcp://*:5557", max_queue_size=0)


# Runs under the vllm venv: vLLM's own ZmqEventPublisher publishes the given MIXED payloads.
_VLLM_PUBLISHER = """
import json, sys, msgspec
from vllm.distributed.kv_events import KVEventBatch, ZmqEventPublisher
args = json.loads(sys.argv[1])
pub = ZmqEventPublisher(0, endpoint=args["endpoint"], replay_endpoint=args["replay"], topic=args["topic"])
decoder = msgspec.msgpack.Decoder(KVEventBatch)
for payload in args["payloads"]:
    pub.publish(decoder.decode(bytes.fromhex(payload)))
print("published", flush=True)
sys.stdin.read()
pub.shutdown()
"""


@pytest.mark.vllm
def test_replay_replies_are_identical_to_vllm_publisher(
    ctx: zmq.Context[zmq.Socket[bytes]], publisher_factory: list[ZmqKvEventPublisher]
) -> None:
    """Same batches through vLLM's publisher and ours: every replay frame is equal."""
    python = require_vllm_python()
    steps = [VllmEventBatch(float(i), _step(i)) for i in range(4)]

    def _complete(replies: list[list[bytes]]) -> list[list[bytes]] | None:
        return replies if len(replies) == len(steps[1:]) + 1 else None  # seqs 1.., end marker

    vllm_replay = f"tcp://127.0.0.1:{free_port()}"
    args = {
        "endpoint": f"tcp://*:{free_port()}",
        "replay": "tcp://*:" + vllm_replay.rsplit(":", 1)[1],
        "topic": TOPIC,
        "payloads": [encode_batch(b).hex() for b in steps],
    }
    ours_replay = f"tcp://127.0.0.1:{free_port()}"
    ours = _publisher(publisher_factory, f"tcp://*:{free_port()}", replay_endpoint=ours_replay, data_parallel_rank=0)
    for batch in steps:
        ours.publish_batch(batch.ts, batch.events)
    _published(ours, len(steps))
    with subprocess.Popen(
        [python, "-c", _VLLM_PUBLISHER, json.dumps(args)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdin is not None
        try:
            assert proc.stdout.readline().strip() == "published"
            theirs = wait_until(
                lambda: _complete(_replay(ctx, vllm_replay, 1)), timeout=30, what="vLLM buffered every batch"
            )
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    assert _replay(ctx, ours_replay, 1) == theirs
    assert [decode_batch(r[3]).data_parallel_rank for r in theirs[:-1]] == [0, 0, 0], "vLLM stamps rank 0"
