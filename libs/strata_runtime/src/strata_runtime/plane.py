"""The JetStream streams and key-value buckets of the event plane, with their settings.

Whoever starts first (a service or `strata up`) creates them; creating again is a no-op
that converges the settings. Sizes and ages are deliberate:

* KV events: memory of the fleet's recent cache activity for consumers that restart;
  an hour is plenty, since engines resync with AllBlocksCleared after longer gaps.
* Usage: the ledger's durable inbox; a week of retention, and a 10-minute duplicate
  window so a gateway retrying a publish (same request id) never double-counts.
"""

from __future__ import annotations

from nats.js.api import RetentionPolicy, StorageType

from strata_contracts import subjects
from strata_runtime.messaging import Broker

__all__ = ["REGISTRY_TTL_S", "ensure_event_plane"]

_HOUR = 3600.0
REGISTRY_TTL_S = 30.0
_DAY = 24 * _HOUR


async def ensure_event_plane(broker: Broker) -> None:
    """Create or update every stream and bucket Strata uses."""
    await broker.ensure_stream(
        subjects.KV_EVENTS_STREAM,
        [subjects.KV_EVENTS_ALL],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=_HOUR,
        duplicate_window=60.0,
    )
    await broker.ensure_stream(
        subjects.USAGE_STREAM,
        [subjects.USAGE_ALL],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * _DAY,
        duplicate_window=600.0,
    )
    # Agents heartbeat every few seconds; a crashed agent's engines expire on their own.
    await broker.kv(subjects.ENGINE_REGISTRY_BUCKET, history=1, ttl=REGISTRY_TTL_S)
    await broker.kv(subjects.CACHE_RING_BUCKET, history=10)
    await broker.kv(subjects.CONFIG_BUCKET, history=10)
