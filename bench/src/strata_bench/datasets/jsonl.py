"""AIBrix-compatible prompt files (JSONL, one object per line).

Three line shapes, told apart by their keys::

    plain       {"prompt": "...", "completion": "..."}                 completion optional
    sessioned   {"session_id": 0, "prompts": [...], "completions": [...]}   completions optional
    shared      {"prompt": "...", "token_count": 1000, "prefix_group": 0, "config_id": 0}

Strata adds optional keys that AIBrix ignores: ``prompt_tokens`` / ``output_tokens`` on
plain lines (exact lengths for replay), ``think_times_s`` on sessioned lines (pause before
each turn) and ``shared_tokens`` on shared lines (length of the group prefix this prompt
starts with). Optional keys are written only when set, so AIBrix files round-trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "DatasetEntry",
    "PromptEntry",
    "SessionEntry",
    "SharedPromptEntry",
    "entry_from_json",
    "entry_to_json",
    "iter_dataset",
    "read_dataset",
    "write_dataset",
]


@dataclass(frozen=True)
class PromptEntry:
    """A plain prompt.

    Attributes:
        prompt: the prompt text.
        completion: a reference answer (its token count can set the output length).
        prompt_tokens: exact prompt length in the tokenizer it was built for, when known.
        output_tokens: output tokens to ask for (replay of a logged request).
    """

    prompt: str
    completion: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class SessionEntry:
    """A multi-turn conversation: the user turns, in order.

    Attributes:
        session_id: conversation id (int for synthetic sets, the source id for ShareGPT).
        prompts: the user turns.
        completions: reference answers aligned with `prompts` ("" where none).
        think_times_s: pause before each turn, aligned with `prompts` (first is usually 0).
    """

    session_id: int | str
    prompts: tuple[str, ...]
    completions: tuple[str, ...] | None = None
    think_times_s: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name, values in (("completions", self.completions), ("think_times_s", self.think_times_s)):
            if values is not None and len(values) != len(self.prompts):
                raise ValueError(f"session {self.session_id}: {len(values)} {name} for {len(self.prompts)} prompts")


@dataclass(frozen=True)
class SharedPromptEntry:
    """One prompt of a controlled prefix-sharing set (AIBrix ``synthetic_shared``).

    Attributes:
        prompt: the prompt text.
        token_count: its exact length in the generating tokenizer.
        prefix_group: prefix group within its config.
        config_id: the generating configuration.
        shared_tokens: how many leading tokens come from the group's prefix.
    """

    prompt: str
    token_count: int
    prefix_group: int
    config_id: int
    shared_tokens: int | None = None


DatasetEntry = PromptEntry | SessionEntry | SharedPromptEntry


def entry_from_json(obj: Mapping[str, Any]) -> DatasetEntry:
    """Build the entry a decoded JSONL object describes (shape chosen by its keys).

    Raises:
        ValueError: the object matches none of the three shapes.
    """
    if "prompts" in obj:
        completions = obj.get("completions")
        think = obj.get("think_times_s")
        return SessionEntry(
            session_id=obj["session_id"],
            prompts=tuple(str(p) for p in obj["prompts"]),
            completions=None if completions is None else tuple("" if c is None else str(c) for c in completions),
            think_times_s=None if think is None else tuple(float(t) for t in think),
        )
    if "prompt" not in obj:
        raise ValueError(f"not a prompt line (keys {sorted(obj)})")
    if "prefix_group" in obj:
        shared = obj.get("shared_tokens")
        return SharedPromptEntry(
            prompt=str(obj["prompt"]),
            token_count=int(obj["token_count"]),
            prefix_group=int(obj["prefix_group"]),
            config_id=int(obj.get("config_id", 0)),
            shared_tokens=None if shared is None else int(shared),
        )
    return PromptEntry(
        prompt=str(obj["prompt"]),
        completion=None if obj.get("completion") is None else str(obj["completion"]),
        prompt_tokens=_opt_int(obj.get("prompt_tokens")),
        output_tokens=_opt_int(obj.get("output_tokens")),
    )


def entry_to_json(entry: DatasetEntry) -> dict[str, Any]:
    """The JSONL object of `entry` (unset optional keys left out)."""
    out: dict[str, Any]
    if isinstance(entry, SessionEntry):
        out = {"session_id": entry.session_id, "prompts": list(entry.prompts)}
        if entry.completions is not None:
            out["completions"] = list(entry.completions)
        if entry.think_times_s is not None:
            out["think_times_s"] = list(entry.think_times_s)
    elif isinstance(entry, SharedPromptEntry):
        out = {
            "prompt": entry.prompt,
            "token_count": entry.token_count,
            "prefix_group": entry.prefix_group,
            "config_id": entry.config_id,
        }
        if entry.shared_tokens is not None:
            out["shared_tokens"] = entry.shared_tokens
    else:
        out = {"prompt": entry.prompt}
        for key in ("completion", "prompt_tokens", "output_tokens"):
            value = getattr(entry, key)
            if value is not None:
                out[key] = value
    return out


def iter_dataset(path: str | Path) -> Iterator[DatasetEntry]:
    """Stream the entries of a JSONL prompt file (blank lines skipped).

    Raises:
        ValueError: a line is not JSON or not a prompt line; the message names the line.
    """
    with Path(path).open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                yield entry_from_json(obj)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from exc


def read_dataset(path: str | Path) -> list[DatasetEntry]:
    """All entries of a JSONL prompt file (see :func:`iter_dataset`)."""
    return list(iter_dataset(path))


def write_dataset(entries: Iterable[DatasetEntry], path: str | Path) -> int:
    """Write `entries` as JSONL (parent folders created); returns the number of lines."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with target.open("wb") as f:
        for entry in entries:
            f.write(orjson.dumps(entry_to_json(entry)) + b"\n")
            count += 1
    return count


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
