"""Controlled prefix sharing (AIBrix ``synthetic_shared``), exact at the token level.

Each configuration has `num_prefix` groups of `num_samples_per_prefix` prompts. A group
owns one random *base prefix* (token ids). For every sample::

    L ~ Normal(prompt_length, prompt_length_std), truncated to L >= 1
    P ~ Normal(shared_proportion * L, shared_proportion_std * L), truncated to [0, L]
    ids = base[:P] + suffix          suffix: L - P fresh random ids, suffix[0] != base[P]

so a sample shares *exactly* P leading tokens with its group's base (no accidental extra
match), two samples of one group share exactly ``min(P_a, P_b)`` tokens (suffix starts are
distinct within a group while the tokenizer has pieces to spare), and groups of the whole
dataset start with distinct tokens. With ``*_std = 0`` every sample of a config has
``L = prompt_length`` and ``P = int(L * shared_proportion)`` (AIBrix's prefix length).
Lengths are exact: the text encodes back to ``ids`` (verified, fixed up at the tail).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from strata_bench.datasets.jsonl import SharedPromptEntry
from strata_bench.tokenizer import BenchTokenizer, extend_to_length, piece_ids

__all__ = [
    "PrefixSharingConfig",
    "PrefixSharingDataset",
    "generate_prefix_sharing",
    "write_stats",
]

_MAX_REJECTIONS = 64


@dataclass(frozen=True)
class PrefixSharingConfig:
    """One configuration of a prefix-sharing set (AIBrix CLI defaults).

    Attributes:
        prompt_length: mean prompt length in tokens.
        prompt_length_std: its standard deviation.
        shared_proportion: mean fraction of a prompt taken from its group prefix.
        shared_proportion_std: its standard deviation (as a fraction of the prompt).
        num_samples_per_prefix: prompts per group.
        num_prefix: groups.
    """

    prompt_length: int = 1000
    prompt_length_std: float = 100
    shared_proportion: float = 0.9
    shared_proportion_std: float = 0.01
    num_samples_per_prefix: int = 200
    num_prefix: int = 10

    def __post_init__(self) -> None:
        if self.prompt_length < 1 or self.num_samples_per_prefix < 1 or self.num_prefix < 1:
            raise ValueError(f"prompt_length, num_samples_per_prefix and num_prefix must be >= 1: {self}")
        if not 0.0 <= self.shared_proportion <= 1.0:
            raise ValueError(f"shared_proportion must be in [0, 1], got {self.shared_proportion}")
        if self.prompt_length_std < 0 or self.shared_proportion_std < 0:
            raise ValueError(f"standard deviations must be >= 0: {self}")


@dataclass(frozen=True)
class PrefixSharingDataset:
    """Generated prompts and their statistics.

    Attributes:
        entries: the prompts, grouped by config then group, or shuffled.
        stats: one dict per config plus an ``overall`` dict (see :func:`write_stats`).
    """

    entries: list[SharedPromptEntry]
    stats: dict[str, Any]


def generate_prefix_sharing(
    tokenizer: BenchTokenizer,
    configs: Sequence[PrefixSharingConfig],
    *,
    seed: int = 0,
    randomize_order: bool = False,
) -> PrefixSharingDataset:
    """Generate a prefix-sharing prompt set; the same seed gives the same texts.

    Args:
        tokenizer: the target tokenizer (lengths are exact in it).
        configs: configurations; ``config_id`` is the position in this list.
        seed: seeds every random choice.
        randomize_order: shuffle all prompts across groups and configs.

    Raises:
        ValueError: an empty config list.
    """
    if not configs:
        raise ValueError("at least one configuration is needed")
    rng = random.Random(seed)
    pieces = piece_ids(tokenizer)
    entries: list[SharedPromptEntry] = []
    config_stats: list[dict[str, Any]] = []
    first_ids: set[int] = set()
    for config_id, config in enumerate(configs):
        cached_tokens = 0
        before = len(entries)
        for group in range(config.num_prefix):
            base = [_fresh_first(pieces, first_ids, rng)]
            suffix_starts: set[int] = set()
            longest = 0
            for _ in range(config.num_samples_per_prefix):
                length = _truncated_normal(rng, config.prompt_length, config.prompt_length_std, 1, None)
                shared = _truncated_normal(
                    rng, config.shared_proportion * length, config.shared_proportion_std * length, 0, length
                )
                while len(base) <= length:
                    base.append(pieces[rng.randrange(len(pieces))])
                ids = base[:shared]
                if shared < length:
                    ids.append(_suffix_start(pieces, base[shared], suffix_starts, rng))
                head = tokenizer.decode(ids)
                text = extend_to_length(tokenizer, head, length, rng)
                entries.append(SharedPromptEntry(text, length, group, config_id, shared))
                cached_tokens += min(shared, longest)
                longest = max(longest, shared)
        config_stats.append(_config_stats(config_id, config, entries[before:], cached_tokens))
    if randomize_order:
        rng.shuffle(entries)
    total = sum(s["total_tokens"] for s in config_stats)
    cached = sum(s["cacheable_tokens"] for s in config_stats)
    overall = {
        "num_requests": len(entries),
        "total_tokens": total,
        "cacheable_tokens": cached,
        "prefix_sharing_ratio": cached / total if total else 0.0,
        "randomize_order": randomize_order,
        "seed": seed,
    }
    return PrefixSharingDataset(entries, {"configs": config_stats, "overall": overall})


def write_stats(dataset: PrefixSharingDataset, path: str | Path) -> None:
    """Write the statistics JSON next to the dataset (parent folders created).

    Per config: its parameters, ``prefix_length`` / ``suffix_length`` (AIBrix's
    ``int(prompt_length * shared_proportion)`` and the rest), ``prefix_proportion``,
    ``num_requests``, ``total_tokens``, measured ``mean_prompt_tokens`` and
    ``mean_shared_tokens``, ``cacheable_tokens`` (tokens a perfect prefix cache would reuse,
    in generation order) and ``prefix_sharing_ratio`` = cacheable / total.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(orjson.dumps(dataset.stats, option=orjson.OPT_INDENT_2))


def _config_stats(
    config_id: int, config: PrefixSharingConfig, entries: Sequence[SharedPromptEntry], cached: int
) -> dict[str, Any]:
    total = sum(e.token_count for e in entries)
    shared = sum(e.shared_tokens or 0 for e in entries)
    prefix_length = int(config.prompt_length * config.shared_proportion)
    return {
        "config_id": config_id,
        **asdict(config),
        "prefix_length": prefix_length,
        "suffix_length": config.prompt_length - prefix_length,
        "prefix_proportion": prefix_length / config.prompt_length,
        "num_requests": len(entries),
        "total_tokens": total,
        "mean_prompt_tokens": total / len(entries),
        "mean_shared_tokens": shared / len(entries),
        "cacheable_tokens": cached,
        "prefix_sharing_ratio": cached / total if total else 0.0,
    }


def _fresh_first(pieces: Sequence[int], used: set[int], rng: random.Random) -> int:
    """A piece no other group starts with (groups differ from their first token)."""
    if len(used) >= len(pieces):
        raise ValueError(f"more prefix groups than the {len(pieces)} distinct pieces of the tokenizer")
    while True:
        first = pieces[rng.randrange(len(pieces))]
        if first not in used:
            used.add(first)
            return first


def _suffix_start(pieces: Sequence[int], avoid: int, used: set[int], rng: random.Random) -> int:
    """A first suffix token unlike the base's next token and (while pieces last) unlike
    every other suffix start of the group, so two samples share no more than their prefixes."""
    fresh = len(used) < len(pieces) - 1
    while True:
        candidate = pieces[rng.randrange(len(pieces))]
        if candidate != avoid and not (fresh and candidate in used):
            used.add(candidate)
            return candidate


def _truncated_normal(rng: random.Random, mean: float, std: float, low: int, high: int | None) -> int:
    """A rounded normal draw within ``[low, high]`` (rejection, then clamping)."""
    for _ in range(_MAX_REJECTIONS):
        value = round(rng.gauss(mean, std)) if std > 0 else int(mean)
        if value >= low and (high is None or value <= high):
            return value
    value = max(low, round(mean))
    return value if high is None else min(high, value)
