"""The gateway's Prometheus metrics (served on its /metrics) and its tracer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import cache

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from strata_runtime.tracing import tracer

__all__ = [
    "ENGINE_IN_FLIGHT",
    "IN_FLIGHT",
    "LATENCY",
    "REQUESTS",
    "RETRIES",
    "ROUTE_FALLBACKS",
    "ROUTE_SECONDS",
    "TRACER",
    "TTFT",
    "UPSTREAM_ERRORS",
    "request_seconds",
    "requests_total",
    "route_fallbacks",
    "ttft_seconds",
]

TRACER = tracer("strata_gateway")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

REQUESTS = Counter(
    "strata_gateway_requests_total",
    "Finished requests, by endpoint, HTTP status returned to the client and strategy.",
    ["endpoint", "status", "strategy"],
)
LATENCY = Histogram(
    "strata_gateway_request_seconds",
    "End-to-end latency of generation requests as the gateway saw them.",
    ["endpoint", "strategy"],
    buckets=_LATENCY_BUCKETS,
)
TTFT = Histogram(
    "strata_gateway_ttft_seconds",
    "Time from request arrival to the first upstream byte (stream) or full body (non-stream).",
    ["endpoint", "strategy"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "strata_gateway_upstream_errors_total",
    "Failed upstream attempts, by engine and kind (connect|status_5xx|timeout|disconnect|stream_error).",
    ["engine", "kind"],
)
IN_FLIGHT = Gauge("strata_gateway_in_flight", "Generation requests in progress in this gateway.")


class _EngineInFlight(Collector):
    """`strata_gateway_engine_in_flight{engine}`, read from the fleet's counts at scrape time (free per request)."""

    def __init__(self) -> None:
        self._source: Callable[[], Mapping[str, int]] = dict

    def read_from(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Report what `source` returns (engine id ─▶ requests outstanding) from now on."""
        self._source = source

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "strata_gateway_engine_in_flight", "Requests this gateway has outstanding per engine.", labels=["engine"]
        )
        for engine, count in sorted(self._source().items()):
            family.add_metric([engine], count)
        yield family


ENGINE_IN_FLIGHT = _EngineInFlight()
REGISTRY.register(ENGINE_IN_FLIGHT)
ROUTE_FALLBACKS = Counter(
    "strata_gateway_route_fallback_total",
    "Local picks instead of the router's, by reason (timeout|no_responders|invalid_reply|unroutable_engine|"
    "too_large|disconnected|disabled).",
    ["reason"],
)
ROUTE_SECONDS = Histogram(
    "strata_gateway_route_seconds",
    "Time to choose an engine, by source (router|fallback).",
    ["source"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)
RETRIES = Counter(
    "strata_gateway_retries_total",
    "Requests sent to another engine after a failure before the first byte, by reason (connect|status_5xx|disconnect).",
    ["reason"],
)


# Labelled children of the per-request metrics, looked up once per label set
# (prometheus_client's .labels() validates and locks on every call; label sets are few).
@cache
def requests_total(endpoint: str, status: int, strategy: str) -> Counter:
    """REQUESTS for these labels."""
    return REQUESTS.labels(endpoint, str(status), strategy)


@cache
def request_seconds(endpoint: str, strategy: str) -> Histogram:
    """LATENCY for these labels."""
    return LATENCY.labels(endpoint, strategy)


@cache
def ttft_seconds(endpoint: str, strategy: str) -> Histogram:
    """TTFT for these labels."""
    return TTFT.labels(endpoint, strategy)


@cache
def route_fallbacks(reason: str) -> Counter:
    """ROUTE_FALLBACKS for this reason."""
    return ROUTE_FALLBACKS.labels(reason)
