"""One valid example of every channel message: documentation, demos and tests."""

from __future__ import annotations

from strata_contracts.hashing import StrataBlockKeys, VllmBlockHasher, external_hash
from strata_contracts.messages import (
    BlockRemoved,
    BlockStored,
    CacheMember,
    CachePlacement,
    Contract,
    EngineLoad,
    EngineRegistration,
    HashScheme,
    KvEventBatch,
    KvLookupReply,
    KvLookupRequest,
    LimitsConfig,
    MemberState,
    PrefixMatch,
    RingMember,
    RingState,
    RouteDecision,
    RouteOutcome,
    RoutePick,
    RoutingPolicyConfig,
    UsageRecord,
)

__all__ = ["examples"]

_TS = 1_795_500_000.0
_TOKENS = list(range(1000, 1032))


def examples() -> list[Contract]:
    """A fresh list with one realistic instance of every message and reply model."""
    hasher = VllmBlockHasher(HashScheme.SHA256_CBOR, block_size=16)
    engine_hashes = [external_hash(h) for h in hasher.hash_prompt(_TOKENS)]
    keys = StrataBlockKeys("tiny|bf16|tp1|b16", 16).keys(_TOKENS)
    return [
        EngineLoad(
            engine_id="engine-0",
            seq=42,
            ts=_TS,
            running=3,
            waiting=1,
            kv_usage=0.37,
            prompt_tps=5120.0,
            generation_tps=410.5,
            prefix_hit_rate=0.62,
        ),
        EngineRegistration(
            engine_id="engine-0",
            url="http://127.0.0.1:8000",
            model="tiny",
            max_model_len=4096,
            block_size=16,
            hash_scheme=HashScheme.SHA256_CBOR,
            hash_seed="0",
            num_blocks=4096,
            kv_events=True,
            agent_id="agent-0",
            heartbeat_ts=_TS,
        ),
        KvEventBatch(
            engine_id="engine-0",
            seq=7,
            ts=_TS,
            events=[
                BlockStored(block_hashes=engine_hashes, token_ids=_TOKENS, block_size=16),
                BlockRemoved(block_hashes=engine_hashes[:1]),
            ],
        ),
        CacheMember(
            server_id="cache-0",
            host="127.0.0.1",
            port=9400,
            capacity_bytes=1 << 30,
            used_bytes=1 << 20,
            state=MemberState.UP,
            ts=_TS,
        ),
        RingState(
            epoch=3,
            members=[RingMember(server_id="cache-0", address="127.0.0.1:9400")],
            vnodes=128,
            replicas=1,
            checksum="9f2c",
        ),
        CachePlacement(server_id="cache-0", seq=11, epoch=3, stored=keys, evicted=[]),
        KvLookupRequest(model="tiny", block_keys=keys),
        KvLookupReply(matches=[PrefixMatch(holder="engine-0", tier="engine", blocks=2)], ring_epoch=3),
        RoutePick(
            request_id="req-1",
            model="tiny",
            strategy="prefix-cache",
            tenant_id="acme",
            prompt_chars=120,
            block_keys=keys,
            max_tokens=64,
            deadline_ms=20,
        ),
        RouteDecision(
            decision_id="dec-1",
            engine_id="engine-0",
            url="http://127.0.0.1:8000",
            strategy="prefix-cache",
            expected_cached_tokens=32,
        ),
        RouteOutcome(
            decision_id="dec-1",
            request_id="req-1",
            engine_id="engine-0",
            strategy="prefix-cache",
            status=200,
            ttft_ms=41.5,
            latency_ms=812.0,
            prompt_tokens=40,
            completion_tokens=64,
            cached_tokens=32,
        ),
        UsageRecord(
            request_id="req-1",
            tenant_id="acme",
            api_key_id="key-1",
            model="tiny",
            engine_id="engine-0",
            strategy="prefix-cache",
            endpoint="/v1/chat/completions",
            stream=True,
            status=200,
            prompt_tokens=40,
            completion_tokens=64,
            cached_tokens=32,
            ttft_ms=41.5,
            latency_ms=812.0,
            started_at=_TS,
        ),
        RoutingPolicyConfig(name="default", default_strategy="least-request"),
        LimitsConfig(name="acme", rpm=600, tpm=100_000, max_concurrency=32),
    ]
