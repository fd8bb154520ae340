"""Metrics, summaries, reports and plots from :class:`RequestRecord` lists.

Import cost: this package does not import matplotlib; :mod:`strata_bench.analysis.plots` does.
"""

from strata_bench.analysis.io import (
    RECORDS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    read_json,
    read_records,
    read_summary,
    write_json,
    write_records,
)
from strata_bench.analysis.metrics import e2e, is_ok, itl_gaps, output_tokens, send_lag, tpot, ttft
from strata_bench.analysis.report import compare, markdown_summary
from strata_bench.analysis.stats import Distribution, describe, percentile
from strata_bench.analysis.summary import SLO, EngineStats, Summary, summarize

__all__ = [
    "RECORDS_FILE",
    "RUN_FILE",
    "SLO",
    "SUMMARY_FILE",
    "Distribution",
    "EngineStats",
    "Summary",
    "compare",
    "describe",
    "e2e",
    "is_ok",
    "itl_gaps",
    "markdown_summary",
    "output_tokens",
    "percentile",
    "read_json",
    "read_records",
    "read_summary",
    "send_lag",
    "summarize",
    "tpot",
    "ttft",
    "write_json",
    "write_records",
]
