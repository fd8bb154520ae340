"""Prompt datasets: AIBrix-compatible JSONL files and the generators that write them.

``jsonl`` reads and writes the three line shapes; ``synthetic`` builds controlled
prefix-sharing sets, ``multiturn`` synthetic conversations, ``sharegpt`` converts the
public ShareGPT dump and ``replay`` turns a previous run's client log back into prompts.
"""

from strata_bench.datasets.jsonl import (
    DatasetEntry,
    PromptEntry,
    SessionEntry,
    SharedPromptEntry,
    entry_from_json,
    entry_to_json,
    iter_dataset,
    read_dataset,
    write_dataset,
)
from strata_bench.datasets.multiturn import MultiturnConfig, generate_multiturn
from strata_bench.datasets.replay import LoggedRequest, read_client_log, replay_prompts
from strata_bench.datasets.sharegpt import read_sharegpt
from strata_bench.datasets.synthetic import (
    PrefixSharingConfig,
    PrefixSharingDataset,
    generate_prefix_sharing,
    write_stats,
)

__all__ = [
    "DatasetEntry",
    "LoggedRequest",
    "MultiturnConfig",
    "PrefixSharingConfig",
    "PrefixSharingDataset",
    "PromptEntry",
    "SessionEntry",
    "SharedPromptEntry",
    "entry_from_json",
    "entry_to_json",
    "generate_multiturn",
    "generate_prefix_sharing",
    "iter_dataset",
    "read_client_log",
    "read_dataset",
    "read_sharegpt",
    "replay_prompts",
    "write_dataset",
    "write_stats",
]
