"""Replay of a previous run's client log: prompts with per-request input/output lengths.

Two logs are read, one JSON object per line, told apart by their keys:

* Strata's own ``RequestRecord`` JSONL (``scheduled_s``/``sent_s`` keys). It keeps no
  prompt text (only ``extra["prompt"]`` when a client put it there), so the prompt is
  rebuilt as random text of exactly ``prompt_tokens`` tokens;
* AIBrix client output (``input``/``output``/``prompt_tokens``/``output_tokens``,
  ``start_time`` in epoch seconds). ``input`` is the chat message list (or a string);
  like AIBrix's ``convert --type trace`` the first message's content is the prompt, and
  turns are numbered by order of appearance within each ``session_id``.

Each record becomes a :class:`LoggedRequest`; :func:`replay_prompts` turns those into
:class:`~strata_bench.datasets.jsonl.PromptEntry` lines whose ``output_tokens`` asks for
the logged output length and ``prompt_tokens`` states the exact prompt length.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from strata_bench.datasets.jsonl import PromptEntry
from strata_bench.tokenizer import BenchTokenizer, text_of_length

__all__ = ["LoggedRequest", "read_client_log", "replay_prompts"]


@dataclass(frozen=True)
class LoggedRequest:
    """One logged request.

    Attributes:
        at_s: when it was scheduled/started, seconds after the first record of the log.
        prompt: the logged prompt text, when the log kept it.
        completion: the logged answer text, when kept.
        input_tokens: prompt tokens as counted by the server (or the plan).
        output_tokens: completion tokens received.
        session_id: session of a multi-turn run.
        turn: turn within the session.
        ok: the request succeeded.
    """

    at_s: float
    prompt: str | None
    completion: str | None
    input_tokens: int | None
    output_tokens: int | None
    session_id: str | None
    turn: int
    ok: bool


def read_client_log(path: str | Path, *, include_failed: bool = False) -> Iterator[LoggedRequest]:
    """Logged requests of a Strata or AIBrix client JSONL file, in file order.

    Raises:
        ValueError: a line is neither kind of record; the message names the line.
    """
    origin: float | None = None
    turns: dict[str, int] = {}
    with Path(path).open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = orjson.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: not a JSON object")
            if "scheduled_s" in obj or "sent_s" in obj:
                record = _from_strata(obj)
            elif "input" in obj or "request_id" in obj:
                record = _from_aibrix(obj)
                session = record.session_id
                if session is not None:
                    record = replace(record, turn=turns.get(session, 0))
                    turns[session] = record.turn + 1
            else:
                raise ValueError(f"{path}:{lineno}: neither a Strata RequestRecord nor an AIBrix client record")
            if origin is None:
                origin = record.at_s
            if record.ok or include_failed:
                yield replace(record, at_s=record.at_s - origin)


def replay_prompts(
    records: Iterable[LoggedRequest],
    tokenizer: BenchTokenizer,
    *,
    seed: int = 0,
    use_logged_text: bool = True,
) -> Iterator[PromptEntry]:
    """Prompts that replay `records` with the logged lengths.

    The logged text is kept when present (and `use_logged_text`), its length counted in
    `tokenizer`; otherwise random text of exactly ``input_tokens`` tokens is generated.
    ``output_tokens`` is the logged output length (at least 1), None when unknown.

    Raises:
        ValueError: a record has neither text nor an input length.
    """
    rng = random.Random(seed)
    for record in records:
        if use_logged_text and record.prompt is not None:
            text = record.prompt
            tokens = len(tokenizer.encode(text))
        elif record.input_tokens is not None:
            tokens = max(1, record.input_tokens)
            text = text_of_length(tokenizer, tokens, rng)
        else:
            raise ValueError(f"logged request at {record.at_s:.3f}s has neither prompt text nor an input length")
        output = None if record.output_tokens is None else max(1, record.output_tokens)
        yield PromptEntry(text, completion=record.completion, prompt_tokens=tokens, output_tokens=output)


def _from_strata(obj: dict[str, Any]) -> LoggedRequest:
    extra = obj.get("extra") or {}
    status = obj.get("status")
    ok = not obj.get("error") and not obj.get("error_type") and (not status or 200 <= int(status) < 300)
    session = obj.get("session_id")
    return LoggedRequest(
        at_s=float(obj.get("scheduled_s", obj.get("sent_s", 0.0))),
        prompt=_str_or_none(extra.get("prompt")),
        completion=_str_or_none(extra.get("completion")),
        input_tokens=_int_or_none(obj.get("prompt_tokens")),
        output_tokens=_int_or_none(obj.get("completion_tokens")),
        session_id=None if session is None else str(session),
        turn=int(obj.get("turn") or 0),
        ok=ok,
    )


def _from_aibrix(obj: dict[str, Any]) -> LoggedRequest:
    raw = obj.get("input")
    prompt: str | None
    if isinstance(raw, list) and raw and isinstance(raw[0], dict):
        prompt = _str_or_none(raw[0].get("content"))
    else:
        prompt = _str_or_none(raw)
    status = str(obj.get("status", "success")).lower()
    session = obj.get("session_id")
    return LoggedRequest(
        at_s=float(obj.get("start_time") or 0.0),
        prompt=prompt,
        completion=_str_or_none(obj.get("output")),
        input_tokens=_int_or_none(obj.get("prompt_tokens")),
        output_tokens=_int_or_none(obj.get("output_tokens")),
        session_id=None if session is None else str(session),
        turn=0,
        ok=status in {"success", "ok", "200"} and not obj.get("error_type"),
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
