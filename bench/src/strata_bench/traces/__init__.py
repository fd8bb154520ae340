"""Readers for public request traces, one typed row per request, and time helpers.

Azure LLM 2023/2024 (and the 2025 multimodal file), BurstGPT v1-v3, Mooncake / Qwen-Bailian
hash-id traces (with :class:`BlockText` to turn hash ids into prompts that keep their
sharing) and Grafana-exported rate series. Rows derive from :class:`TraceRow`
(``at_s``, ``input_tokens``, ``output_tokens``); :func:`rebase`, :func:`truncate` and
:func:`scale_time` work on any of them.
"""

from strata_bench.traces.azure import AzureRow, read_azure
from strata_bench.traces.burstgpt import BurstGPTRow, read_burstgpt
from strata_bench.traces.common import TraceRow, open_text, parse_timestamp, rebase, scale_time, truncate
from strata_bench.traces.grafana import QpsSeries, per_second_rates, read_grafana_qps
from strata_bench.traces.mooncake import BAILIAN_BLOCK_SIZE, MOONCAKE_BLOCK_SIZE, BlockText, MooncakeRow, read_mooncake

__all__ = [
    "BAILIAN_BLOCK_SIZE",
    "MOONCAKE_BLOCK_SIZE",
    "AzureRow",
    "BlockText",
    "BurstGPTRow",
    "MooncakeRow",
    "QpsSeries",
    "TraceRow",
    "open_text",
    "parse_timestamp",
    "per_second_rates",
    "read_azure",
    "read_burstgpt",
    "read_grafana_qps",
    "read_mooncake",
    "rebase",
    "scale_time",
    "truncate",
]
