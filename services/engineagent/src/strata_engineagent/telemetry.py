"""The agent's own Prometheus metrics (served on its /metrics, labelled by engine id)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "KV_BATCHES",
    "KV_EVENTS",
    "KV_GAPS",
    "KV_REPLAYS",
    "KV_RESYNCS",
    "REGISTRY_WRITES",
    "SCRAPES",
    "SCRAPE_SECONDS",
]

SCRAPES = Counter(
    "strata_engineagent_scrapes_total",
    "Engine /metrics scrapes, by engine and outcome (ok|failed).",
    ["engine", "outcome"],
)
SCRAPE_SECONDS = Histogram(
    "strata_engineagent_scrape_seconds",
    "Duration of one engine /metrics scrape (fetch + parse).",
    ["engine"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
KV_BATCHES = Counter(
    "strata_engineagent_kv_batches_total",
    "KV-event batches, by engine and outcome (published|replayed|invalid|publish_failed).",
    ["engine", "outcome"],
)
KV_EVENTS = Counter("strata_engineagent_kv_events_total", "KV events republished to JetStream.", ["engine"])
KV_GAPS = Counter("strata_engineagent_kv_gaps_total", "Sequence gaps detected in an engine's KV events.", ["engine"])
KV_REPLAYS = Counter(
    "strata_engineagent_kv_replays_total",
    "Replay requests, by engine and outcome (complete|incomplete).",
    ["engine", "outcome"],
)
KV_RESYNCS = Counter(
    "strata_engineagent_kv_resyncs_total",
    "AllBlocksCleared(resync) batches published, by engine and reason.",
    ["engine", "reason"],
)
REGISTRY_WRITES = Counter(
    "strata_engineagent_registry_writes_total",
    "Registry bucket writes, by engine and operation (put|delete|failed|incomplete).",
    ["engine", "operation"],
)
