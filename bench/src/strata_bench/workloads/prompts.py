"""Prompt sources: what each planned request sends, decoupled from when it is sent.

A :class:`PromptSource` is asked once per arrival (with the arrival time, so a source may
follow a length curve) and returns a :class:`PromptSpec`. Sources are stateful only in
:class:`DatasetPrompts` (``cycle`` order walks the file); all randomness comes from the
``rng`` the builder passes, so a seed fixes the plan.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from strata_bench.datasets.jsonl import PromptEntry, SharedPromptEntry
from strata_bench.tokenizer import BenchTokenizer, extend_to_length, text_of_length
from strata_bench.workloads.lengths import LengthDistribution

__all__ = ["CurvePrompts", "DatasetPrompts", "PromptSource", "PromptSpec", "SyntheticPrompts"]


@dataclass(frozen=True)
class PromptSpec:
    """One prompt to send.

    Attributes:
        text: the prompt (or the user message content, for chat).
        max_tokens: output tokens to ask for.
        prompt_tokens: exact length of `text` in the target tokenizer, when known.
        prefix_group: shared-prefix group, when the source has groups.
    """

    text: str
    max_tokens: int
    prompt_tokens: int | None = None
    prefix_group: int | None = None


class PromptSource(Protocol):
    """Produces the prompt of each arrival."""

    def draw(self, at_s: float, rng: random.Random) -> PromptSpec:
        """The prompt for a request arriving at `at_s` (called once per request, in time order)."""
        ...


class DatasetPrompts:
    """Prompts taken from a dataset (plain or ``synthetic_shared`` lines).

    Output length, first that applies: `output_lengths` (explicit override), the entry's
    ``output_tokens`` (replay), the token count of its ``completion`` (needs `tokenizer`),
    `default_max_tokens`. Prompt length: the entry's stated length, else counted with
    `tokenizer` (once per entry), else unknown. Shared-prefix groups are numbered across
    configs in order of first appearance.

    Args:
        entries: the prompts.
        tokenizer: target tokenizer, for counting; None leaves unknown counts unknown.
        output_lengths: override for every request's output length.
        default_max_tokens: output length when nothing else says (AIBrix default 128).
        order: ``cycle`` walks the entries in order (wrapping), ``random`` draws with
            replacement.

    Raises:
        ValueError: no entries.
    """

    def __init__(
        self,
        entries: Sequence[PromptEntry | SharedPromptEntry],
        tokenizer: BenchTokenizer | None = None,
        *,
        output_lengths: LengthDistribution | None = None,
        default_max_tokens: int = 128,
        order: Literal["cycle", "random"] = "cycle",
    ) -> None:
        if not entries:
            raise ValueError("a dataset prompt source needs at least one entry")
        self._entries = entries
        self._tokenizer = tokenizer
        self._output_lengths = output_lengths
        self._default = default_max_tokens
        self._order = order
        self._next = 0
        self._counts: dict[int, int] = {}
        groups: dict[tuple[int, int], int] = {}
        for entry in entries:
            if isinstance(entry, SharedPromptEntry):
                groups.setdefault((entry.config_id, entry.prefix_group), len(groups))
        self._groups = groups

    def draw(self, at_s: float, rng: random.Random) -> PromptSpec:
        """The next entry as a prompt (see the class docstring for lengths)."""
        if self._order == "random":
            position = rng.randrange(len(self._entries))
        else:
            position = self._next % len(self._entries)
            self._next += 1
        entry = self._entries[position]
        if isinstance(entry, SharedPromptEntry):
            return PromptSpec(
                entry.prompt,
                self._max_tokens(None, None, rng),
                entry.token_count,
                self._groups[(entry.config_id, entry.prefix_group)],
            )
        tokens = entry.prompt_tokens if entry.prompt_tokens is not None else self._count(position, entry.prompt)
        return PromptSpec(entry.prompt, self._max_tokens(entry.output_tokens, entry.completion, rng), tokens)

    def _max_tokens(self, output_tokens: int | None, completion: str | None, rng: random.Random) -> int:
        if self._output_lengths is not None:
            return self._output_lengths.sample(rng)
        if output_tokens is not None:
            return max(1, output_tokens)
        if completion and self._tokenizer is not None:
            return max(1, len(self._tokenizer.encode(completion)))
        return self._default

    def _count(self, position: int, text: str) -> int | None:
        if self._tokenizer is None:
            return None
        if position not in self._counts:
            self._counts[position] = len(self._tokenizer.encode(text))
        return self._counts[position]


class SyntheticPrompts:
    """Random text of drawn lengths, exact in `tokenizer`, optionally behind shared prefixes.

    With ``num_prefixes > 0``, a request gets (with `prefix_probability`) one of
    `num_prefixes` fixed prefixes of `prefix_tokens` tokens (chosen uniformly; its index is
    the ``prefix_group``) followed by its own drawn length of fresh text, like a handful of
    shared system prompts.

    Raises:
        ValueError: a negative prefix size or a probability outside [0, 1].
    """

    def __init__(
        self,
        tokenizer: BenchTokenizer,
        input_lengths: LengthDistribution,
        output_lengths: LengthDistribution,
        *,
        num_prefixes: int = 0,
        prefix_tokens: int = 0,
        prefix_probability: float = 1.0,
        seed: int = 0,
    ) -> None:
        if num_prefixes < 0 or prefix_tokens < 0 or not 0.0 <= prefix_probability <= 1.0:
            raise ValueError("num_prefixes and prefix_tokens must be >= 0 and prefix_probability in [0, 1]")
        self._tokenizer = tokenizer
        self._input = input_lengths
        self._output = output_lengths
        self._prefix_tokens = prefix_tokens
        self._probability = prefix_probability
        prefix_rng = random.Random(f"strata-prefixes:{seed}")
        self._prefixes = [text_of_length(tokenizer, prefix_tokens, prefix_rng) for _ in range(num_prefixes)]

    def draw(self, at_s: float, rng: random.Random) -> PromptSpec:
        """A fresh prompt of a drawn length (plus a shared prefix when configured)."""
        length = self._input.sample(rng)
        max_tokens = self._output.sample(rng)
        if self._prefixes and rng.random() < self._probability:
            group = rng.randrange(len(self._prefixes))
            total = self._prefix_tokens + length
            text = extend_to_length(self._tokenizer, self._prefixes[group], total, rng)
            return PromptSpec(text, max_tokens, total, group)
        return PromptSpec(text_of_length(self._tokenizer, length, rng), max_tokens, length)


class CurvePrompts:
    """Random text whose length follows a curve over time (AIBrix length patterns).

    Args:
        tokenizer: target tokenizer (lengths are exact in it).
        input_curve: prompt length per step (e.g. from a sine pattern with minimum 1).
        output_curve: output length per step; None uses `default_max_tokens`.
        step_s: seconds per curve value; times past the end use the last value.
        default_max_tokens: output length without an output curve.

    Raises:
        ValueError: an empty input curve.
    """

    def __init__(
        self,
        tokenizer: BenchTokenizer,
        input_curve: Sequence[float],
        output_curve: Sequence[float] | None = None,
        *,
        step_s: float = 1.0,
        default_max_tokens: int = 128,
    ) -> None:
        if not input_curve:
            raise ValueError("the input length curve is empty")
        self._tokenizer = tokenizer
        self._input = input_curve
        self._output = output_curve
        self._step_s = step_s
        self._default = default_max_tokens

    def draw(self, at_s: float, rng: random.Random) -> PromptSpec:
        """A prompt with the curve's lengths at `at_s`."""
        length = max(1, round(_at(self._input, at_s, self._step_s)))
        max_tokens = self._default if not self._output else max(1, round(_at(self._output, at_s, self._step_s)))
        return PromptSpec(text_of_length(self._tokenizer, length, rng), max_tokens, length)


def _at(curve: Sequence[float], at_s: float, step_s: float) -> float:
    return curve[min(len(curve) - 1, max(0, int(at_s / step_s)))]
