"""Synthetic multi-turn conversations (AIBrix ``synthetic_multiturn``), exact in tokens.

Number of sessions and turns per session are normal draws (at least 1), each user turn's
length a Pareto draw with a given mean and standard deviation (as AIBrix; its own fit
under-shoots the spread, ``prompt_length_fit="aibrix"`` reproduces it), and a
shared prefix of `shared_prefix_len` tokens (one text for the whole set, like a common
system prompt) is prepended to the **first** turn of every session. Optional answer
lengths produce reference completions of exactly that many tokens, and optional think
times the pause before each later turn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from strata_bench.datasets.jsonl import SessionEntry
from strata_bench.tokenizer import BenchTokenizer, extend_to_length, text_of_length
from strata_bench.workloads.lengths import LengthDistribution, Normal, Pareto

__all__ = ["MultiturnConfig", "generate_multiturn"]


@dataclass(frozen=True)
class MultiturnConfig:
    """Shape of a synthetic multi-turn set (AIBrix CLI defaults).

    Attributes:
        num_sessions_mean: mean number of sessions (one draw for the whole set).
        num_sessions_std: its standard deviation.
        num_turns_mean: mean user turns per session.
        num_turns_std: its standard deviation.
        prompt_length_mean: mean user-turn length in tokens (Pareto).
        prompt_length_std: its standard deviation.
        prompt_length_fit: Pareto fit, ``moments`` (exact) or ``aibrix`` (AIBrix's formula).
        shared_prefix_len: tokens of common text before the first turn of each session.
        answer_lengths: reference completion lengths; None writes no completions.
        think_times_s: pause before turns 2..n in seconds; None writes none.
    """

    num_sessions_mean: float = 10
    num_sessions_std: float = 10
    num_turns_mean: float = 10
    num_turns_std: float = 1
    prompt_length_mean: float = 100
    prompt_length_std: float = 10
    prompt_length_fit: Literal["moments", "aibrix"] = "moments"
    shared_prefix_len: int = 0
    answer_lengths: LengthDistribution | None = None
    think_times_s: LengthDistribution | None = None


def generate_multiturn(tokenizer: BenchTokenizer, config: MultiturnConfig, *, seed: int = 0) -> list[SessionEntry]:
    """Generate sessions with ids ``0..n-1``; the same seed gives the same texts.

    Turn lengths are exact in `tokenizer`: the first turn is ``shared_prefix_len`` plus its
    drawn length, later turns their drawn length.

    Raises:
        ValueError: a negative ``shared_prefix_len``.
    """
    if config.shared_prefix_len < 0:
        raise ValueError(f"shared_prefix_len must be >= 0, got {config.shared_prefix_len}")
    rng = random.Random(seed)
    sessions_dist = Normal(config.num_sessions_mean, config.num_sessions_std, minimum=1)
    turns_dist = Normal(config.num_turns_mean, config.num_turns_std, minimum=1)
    length_dist = Pareto(config.prompt_length_mean, config.prompt_length_std, config.prompt_length_fit, minimum=1)
    prefix = text_of_length(tokenizer, config.shared_prefix_len, rng)
    prefix_tokens = config.shared_prefix_len
    sessions: list[SessionEntry] = []
    for session_id in range(sessions_dist.sample(rng)):
        prompts: list[str] = []
        answers: list[str] = []
        think: list[float] = []
        for turn in range(turns_dist.sample(rng)):
            length = length_dist.sample(rng)
            if turn == 0:
                prompts.append(extend_to_length(tokenizer, prefix, prefix_tokens + length, rng))
            else:
                prompts.append(text_of_length(tokenizer, length, rng))
            if config.answer_lengths is not None:
                answers.append(text_of_length(tokenizer, config.answer_lengths.sample(rng), rng))
            if config.think_times_s is not None:
                think.append(0.0 if turn == 0 else config.think_times_s.sample_float(rng))
        sessions.append(
            SessionEntry(
                session_id=session_id,
                prompts=tuple(prompts),
                completions=tuple(answers) if config.answer_lengths is not None else None,
                think_times_s=tuple(think) if config.think_times_s is not None else None,
            )
        )
    return sessions
