"""Mooncake (FAST'25) and Qwen-Bailian hash-id traces, and prompts that keep their sharing.

Mooncake JSONL: ``{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}``
with 512-token blocks; equal leading ids mean a reusable prefix. Qwen-Bailian traces add
``chat_id``, ``parent_chat_id`` (-1 = root), ``type`` and ``turn``, use **seconds** and
**16-token** blocks.

Multi-turn rows are cumulative: a later turn's ``hash_ids``/``input_length`` already
include the earlier turns and answers. Replay each row as an independent prompt; a
replayer that also appends session history double-counts it.

:class:`BlockText` turns ids into text: each hash id maps deterministically (from the id
and a seed, not from the row) to one block of `block_size` random piece tokens, so equal
ids give byte-identical text and, with a tokenizer that never merges across pieces (the
simulator's), identical token ids at block granularity. The prompt of a row is its blocks
concatenated, the last one cut so the prompt is exactly ``input_length`` tokens; a row
with fewer ids than its length needs is padded with tokens derived from all its ids.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from strata_bench.tokenizer import BenchTokenizer, random_piece_ids
from strata_bench.traces.common import TraceRow, open_text

__all__ = ["BAILIAN_BLOCK_SIZE", "MOONCAKE_BLOCK_SIZE", "BlockText", "MooncakeRow", "read_mooncake"]

MOONCAKE_BLOCK_SIZE: Final = 512
BAILIAN_BLOCK_SIZE: Final = 16


@dataclass(frozen=True)
class MooncakeRow(TraceRow):
    """One hash-id trace row (``input_tokens`` = input_length, ``output_tokens`` = output_length).

    Attributes:
        hash_ids: block hash ids, one per block of the prompt.
        chat_id: request id (Bailian only).
        parent_chat_id: previous turn's ``chat_id``, -1 for a root (Bailian only).
        turn: turn number (Bailian only).
        kind: request type, ``text``/``search``/``image``/``file`` (Bailian only).
    """

    hash_ids: tuple[int, ...] = ()
    chat_id: int | None = None
    parent_chat_id: int | None = None
    turn: int | None = None
    kind: str | None = None


def read_mooncake(path: str | Path, *, time_unit: Literal["auto", "ms", "s"] = "auto") -> Iterator[MooncakeRow]:
    """Stream the rows of a Mooncake or Bailian JSONL trace.

    Args:
        path: the JSONL file (``.jsonl`` or ``.jsonl.gz``).
        time_unit: unit of ``timestamp``; ``auto`` reads seconds for rows carrying
            ``chat_id`` (Bailian) and milliseconds otherwise (Mooncake).

    Raises:
        ValueError: a line does not parse or lacks a field (line named).
    """
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
                unit = time_unit if time_unit != "auto" else ("s" if "chat_id" in obj else "ms")
                timestamp = float(obj["timestamp"])
                yield MooncakeRow(
                    at_s=timestamp if unit == "s" else timestamp / 1000.0,
                    input_tokens=int(obj["input_length"]),
                    output_tokens=int(obj["output_length"]),
                    hash_ids=tuple(int(h) for h in obj.get("hash_ids") or ()),
                    chat_id=_opt_int(obj.get("chat_id")),
                    parent_chat_id=_opt_int(obj.get("parent_chat_id")),
                    turn=_opt_int(obj.get("turn")),
                    kind=None if obj.get("type") is None else str(obj["type"]),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{lineno}: {exc!r}") from exc


class BlockText:
    """Deterministic text blocks for hash ids (see the module docstring).

    Args:
        tokenizer: the target tokenizer; blocks are made of its pieces.
        block_size: tokens per block (512 for Mooncake, 16 for Bailian).
        seed: changes every block's text (same seed, same texts across runs).
        cache_blocks: how many decoded blocks to keep (memory bound, not correctness).
    """

    def __init__(
        self,
        tokenizer: BenchTokenizer,
        *,
        block_size: int = MOONCAKE_BLOCK_SIZE,
        seed: int = 0,
        cache_blocks: int = 16384,
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.seed = seed
        self._cache: OrderedDict[int, tuple[list[int], str]] = OrderedDict()
        self._cache_blocks = cache_blocks

    def block_ids(self, hash_id: int) -> list[int]:
        """The `block_size` token ids of `hash_id`."""
        return list(self._block(hash_id)[0])

    def block_text(self, hash_id: int) -> str:
        """The text of `hash_id`'s block."""
        return self._block(hash_id)[1]

    def prompt_ids(self, hash_ids: Sequence[int], input_length: int) -> list[int]:
        """Token ids of the prompt for a row (exactly `input_length` of them)."""
        ids: list[int] = []
        for hash_id in hash_ids:
            if len(ids) >= input_length:
                break
            ids.extend(self._block(hash_id)[0])
        del ids[input_length:]
        if len(ids) < input_length:
            ids.extend(random_piece_ids(self.tokenizer, input_length - len(ids), self._pad_rng(hash_ids)))
        return ids

    def prompt(self, hash_ids: Sequence[int], input_length: int) -> str:
        """The prompt text for a row: whole blocks, the last one cut to `input_length` tokens.

        Equal leading ids give byte-identical leading text (whole blocks are reused as
        cached strings, never re-decoded in context).
        """
        parts: list[str] = []
        remaining = input_length
        for hash_id in hash_ids:
            if remaining <= 0:
                break
            ids, text = self._block(hash_id)
            parts.append(text if remaining >= len(ids) else self.tokenizer.decode(ids[:remaining]))
            remaining -= len(ids)
        if remaining > 0:
            parts.append(self.tokenizer.decode(random_piece_ids(self.tokenizer, remaining, self._pad_rng(hash_ids))))
        return "".join(parts)

    def _block(self, hash_id: int) -> tuple[list[int], str]:
        hit = self._cache.get(hash_id)
        if hit is not None:
            self._cache.move_to_end(hash_id)
            return hit
        ids = random_piece_ids(self.tokenizer, self.block_size, random.Random(f"strata-block:{self.seed}:{hash_id}"))
        block = (ids, self.tokenizer.decode(ids))
        self._cache[hash_id] = block
        if len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        return block

    def _pad_rng(self, hash_ids: Sequence[int]) -> random.Random:
        return random.Random(f"strata-pad:{self.seed}:{','.join(map(str, hash_ids))}")


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
