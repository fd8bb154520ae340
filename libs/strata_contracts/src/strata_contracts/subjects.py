"""NATS subjects, streams and key-value buckets of Strata's event plane.

Every subject Strata uses is built here; no other module spells one out. Subjects are
versioned (`strata.<area>.v1.…`): a breaking change to a message is a new version and
a new subject, never an edit of an existing one. Variable parts (engine ids, tenant ids,
cache-server ids) must be single NATS tokens, which :func:`token` enforces.

JetStream key-value bucket names may not contain dots, so the buckets that DESIGN.md
names `strata.engine.v1.registry` etc. are spelled with dashes here; their keys are ids.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "CACHE_MEMBERS",
    "CACHE_PLACEMENT_ALL",
    "CACHE_RING_BUCKET",
    "CACHE_RING_KEY",
    "CONFIG_BUCKET",
    "ENGINE_LOAD_ALL",
    "ENGINE_REGISTRY_BUCKET",
    "KV_EVENTS_ALL",
    "KV_EVENTS_STREAM",
    "KV_LOOKUP",
    "ROUTER_QUEUE_GROUP",
    "ROUTE_OUTCOME",
    "ROUTE_PICK",
    "USAGE_ALL",
    "USAGE_STREAM",
    "InvalidToken",
    "cache_placement",
    "engine_load",
    "kv_events",
    "token",
    "usage",
]

_PREFIX: Final = "strata"
# A NATS subject token that is also a valid JetStream KV key (ids are both): ASCII
# letters, digits, `_`, `-` and `=`; no separators, wildcards or whitespace.
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9_\-=]+$")


class InvalidToken(ValueError):
    """A variable subject part is not a single, literal NATS token."""


def token(value: str, what: str = "token") -> str:
    """Return `value` if it can stand as one subject token, else raise :class:`InvalidToken`.

    Args:
        value: the id to embed (engine id, tenant id, cache-server id).
        what: the name used in the error message.
    """
    if not _TOKEN_RE.fullmatch(value):
        raise InvalidToken(
            f"{what} {value!r} is not a valid NATS subject token "
            "(allowed: letters, digits and _-=; no dots, colons, wildcards or spaces)"
        )
    return value


# --- engine plane ---------------------------------------------------------------
ENGINE_LOAD_ALL: Final = f"{_PREFIX}.engine.v1.load.*"
"""Wildcard matching every engine's load subject (router subscription)."""


def engine_load(engine_id: str) -> str:
    """`strata.engine.v1.load.<engine>`: EngineLoad snapshots every 50-100 ms."""
    return f"{_PREFIX}.engine.v1.load.{token(engine_id, 'engine id')}"


ENGINE_REGISTRY_BUCKET: Final = "strata-engine-v1-registry"
"""JetStream KV bucket `strata.engine.v1.registry`; key = engine id, value = EngineRegistration."""

# --- KV events (JetStream) --------------------------------------------------------
KV_EVENTS_STREAM: Final = "STRATA_KV_EVENTS_V1"
KV_EVENTS_ALL: Final = f"{_PREFIX}.kv.v1.events.*"


def kv_events(engine_id: str) -> str:
    """`strata.kv.v1.events.<engine>`: KvEventBatch, in the KV_EVENTS_STREAM stream."""
    return f"{_PREFIX}.kv.v1.events.{token(engine_id, 'engine id')}"


KV_LOOKUP: Final = f"{_PREFIX}.kv.v1.lookup"
"""Request/reply to kvmeta: KvLookupRequest -> KvLookupReply."""

# --- cache tier --------------------------------------------------------------------
CACHE_MEMBERS: Final = f"{_PREFIX}.cache.v1.members"
"""CacheMember registrations and heartbeats from cache servers."""

CACHE_RING_BUCKET: Final = "strata-cache-v1-ring"
"""JetStream KV bucket `strata.cache.v1.ring`; key CACHE_RING_KEY = current RingState."""
CACHE_RING_KEY: Final = "current"

CACHE_PLACEMENT_ALL: Final = f"{_PREFIX}.cache.v1.placement.*"


def cache_placement(server_id: str) -> str:
    """`strata.cache.v1.placement.<server>`: CachePlacement batches of stored/evicted keys."""
    return f"{_PREFIX}.cache.v1.placement.{token(server_id, 'cache server id')}"


# --- routing -----------------------------------------------------------------------
ROUTE_PICK: Final = f"{_PREFIX}.route.v1.pick"
"""Request/reply, served by router replicas in ROUTER_QUEUE_GROUP: RoutePick -> RouteDecision."""
ROUTER_QUEUE_GROUP: Final = "strata-router"
ROUTE_OUTCOME: Final = f"{_PREFIX}.route.v1.outcome"
"""RouteOutcome published by the gateway after each request."""

# --- usage ledger (JetStream, durable) -------------------------------------------------
USAGE_STREAM: Final = "STRATA_USAGE_V1"
USAGE_ALL: Final = f"{_PREFIX}.usage.v1.*"


def usage(tenant_id: str) -> str:
    """`strata.usage.v1.<tenant>`: one UsageRecord per request, deduplicated by request id."""
    return f"{_PREFIX}.usage.v1.{token(tenant_id, 'tenant id')}"


# --- configuration -------------------------------------------------------------------------
CONFIG_BUCKET: Final = "strata-config-v1"
"""JetStream KV bucket `strata.config.v1`; key = `<kind>.<name>`, value = ConfigEntry."""
