"""Pydantic models of every message on Strata's event plane."""

from strata_contracts.messages.base import (
    BlockKey,
    Contract,
    EngineId,
    RequestId,
    TenantId,
    UInt64,
    decode,
    encode,
)
from strata_contracts.messages.cache import CacheMember, CachePlacement, MemberState, RingMember, RingState
from strata_contracts.messages.config import ConfigEntry, LimitsConfig, RoutingPolicyConfig, config_key
from strata_contracts.messages.engine import EngineKind, EngineLoad, EngineRegistration, HashScheme
from strata_contracts.messages.kv import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEvent,
    KvEventBatch,
    KvLookupReply,
    KvLookupRequest,
    PrefixMatch,
)
from strata_contracts.messages.route import RouteDecision, RouteOutcome, RoutePick
from strata_contracts.messages.usage import UsageRecord

__all__ = [
    "AllBlocksCleared",
    "BlockKey",
    "BlockRemoved",
    "BlockStored",
    "CacheMember",
    "CachePlacement",
    "ConfigEntry",
    "Contract",
    "EngineId",
    "EngineKind",
    "EngineLoad",
    "EngineRegistration",
    "HashScheme",
    "KvEvent",
    "KvEventBatch",
    "KvLookupReply",
    "KvLookupRequest",
    "LimitsConfig",
    "MemberState",
    "PrefixMatch",
    "RequestId",
    "RingMember",
    "RingState",
    "RouteDecision",
    "RouteOutcome",
    "RoutePick",
    "RoutingPolicyConfig",
    "TenantId",
    "UInt64",
    "UsageRecord",
    "config_key",
    "decode",
    "encode",
]
