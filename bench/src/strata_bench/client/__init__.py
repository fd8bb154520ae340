"""Async OpenAI-compatible load client: plans in, one :class:`RequestRecord` per request out.

Typical use::

    runner = LoadRunner(EndpointConfig("http://127.0.0.1:8000", model="m"), LoadConfig(mode="open"))
    result = await runner.run(plan)          # result.records: list[RequestRecord]
"""

from strata_bench.client.config import DEFAULT_ENGINE_HEADERS, EndpointConfig, LoadConfig
from strata_bench.client.plan import load_plan, save_plan, synthetic_plan, warmup_from
from strata_bench.client.request import build_request, execute
from strata_bench.client.runner import LoadRunner, RunResult, StopReason, group_units
from strata_bench.client.sse import SSEDecoder, inspect_chunk

__all__ = [
    "DEFAULT_ENGINE_HEADERS",
    "EndpointConfig",
    "LoadConfig",
    "LoadRunner",
    "RunResult",
    "SSEDecoder",
    "StopReason",
    "build_request",
    "execute",
    "group_units",
    "inspect_chunk",
    "load_plan",
    "save_plan",
    "synthetic_plan",
    "warmup_from",
]
