"""The contract table: every channel of DESIGN.md's event plane, its transport and message.

Used to document the plane, to check every channel end to end (`strata demo` publishes
and receives one example of each), and by tests that walk all contracts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from strata_contracts import subjects
from strata_contracts.messages import (
    CacheMember,
    CachePlacement,
    Contract,
    EngineLoad,
    EngineRegistration,
    KvEventBatch,
    KvLookupReply,
    KvLookupRequest,
    LimitsConfig,
    RingState,
    RouteDecision,
    RouteOutcome,
    RoutePick,
    RoutingPolicyConfig,
    UsageRecord,
    config_key,
)

__all__ = ["CHANNELS", "Channel", "Transport", "address"]


class Transport(StrEnum):
    """How a channel's messages travel."""

    PUBSUB = "pubsub"  # core NATS publish/subscribe
    REQUEST = "request"  # core NATS request/reply
    STREAM = "stream"  # JetStream stream (durable)
    KV = "kv"  # JetStream key-value bucket


@dataclass(frozen=True)
class Channel:
    """One row of the event-plane table.

    Attributes:
        name: the subject pattern as DESIGN.md writes it.
        transport: how messages travel.
        message: the request/value/event model.
        reply: the reply model for REQUEST channels.
        container: stream or bucket name for STREAM / KV channels.
    """

    name: str
    transport: Transport
    message: type[Contract]
    reply: type[Contract] | None = None
    container: str | None = None


CHANNELS: tuple[Channel, ...] = (
    Channel("strata.engine.v1.load.<engine>", Transport.PUBSUB, EngineLoad),
    Channel("strata.engine.v1.registry", Transport.KV, EngineRegistration, container=subjects.ENGINE_REGISTRY_BUCKET),
    Channel("strata.kv.v1.events.<engine>", Transport.STREAM, KvEventBatch, container=subjects.KV_EVENTS_STREAM),
    Channel("strata.cache.v1.members", Transport.PUBSUB, CacheMember),
    Channel("strata.cache.v1.ring", Transport.KV, RingState, container=subjects.CACHE_RING_BUCKET),
    Channel("strata.cache.v1.placement.<server>", Transport.PUBSUB, CachePlacement),
    Channel("strata.kv.v1.lookup", Transport.REQUEST, KvLookupRequest, reply=KvLookupReply),
    Channel("strata.route.v1.pick", Transport.REQUEST, RoutePick, reply=RouteDecision),
    Channel("strata.route.v1.outcome", Transport.PUBSUB, RouteOutcome),
    Channel("strata.usage.v1.<tenant>", Transport.STREAM, UsageRecord, container=subjects.USAGE_STREAM),
    Channel("strata.config.v1", Transport.KV, RoutingPolicyConfig, container=subjects.CONFIG_BUCKET),
    Channel("strata.config.v1", Transport.KV, LimitsConfig, container=subjects.CONFIG_BUCKET),
)


def address(message: Contract) -> str:
    """Where `message` goes: its subject (pubsub, request, stream) or its bucket key (KV).

    Raises:
        TypeError: `message` is a reply or not a channel's message.
    """
    match message:
        case EngineLoad():
            return subjects.engine_load(message.engine_id)
        case EngineRegistration():
            return subjects.token(message.engine_id, "engine id")
        case KvEventBatch():
            return subjects.kv_events(message.engine_id)
        case CacheMember():
            return subjects.CACHE_MEMBERS
        case RingState():
            return subjects.CACHE_RING_KEY
        case CachePlacement():
            return subjects.cache_placement(message.server_id)
        case KvLookupRequest():
            return subjects.KV_LOOKUP
        case RoutePick():
            return subjects.ROUTE_PICK
        case RouteOutcome():
            return subjects.ROUTE_OUTCOME
        case UsageRecord():
            return subjects.usage(message.tenant_id)
        case RoutingPolicyConfig() | LimitsConfig():
            return config_key(message)
    raise TypeError(f"{type(message).__name__} is not sent on a channel of its own")
