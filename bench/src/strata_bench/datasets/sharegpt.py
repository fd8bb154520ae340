"""ShareGPT (V3 JSON array) to sessioned prompts, whole conversations kept.

Source: a JSON array of ``{"id": ..., "conversations": [{"from": ..., "value": ...}]}``.
Roles do not always alternate: a conversation may start with the assistant, hold several
user messages in a row, or be empty. Like AIBrix, every non-empty user message becomes one
turn (consecutive user messages stay separate turns); unlike AIBrix the assistant
messages that follow a turn (up to the next user message) are joined as its reference
completion ("" when none). Leading assistant messages and system messages are dropped;
conversations without a user message are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson

from strata_bench.datasets.jsonl import SessionEntry

__all__ = ["ASSISTANT_ROLES", "USER_ROLES", "read_sharegpt"]

USER_ROLES: Final = frozenset({"human", "user"})
ASSISTANT_ROLES: Final = frozenset({"gpt", "chatgpt", "bing", "bard", "assistant", "model"})


def read_sharegpt(
    path: str | Path,
    *,
    max_sessions: int | None = None,
    max_turns: int | None = None,
    with_completions: bool = True,
) -> Iterator[SessionEntry]:
    """Sessions of a ShareGPT JSON file, in file order.

    Args:
        path: the ShareGPT JSON array.
        max_sessions: stop after this many sessions.
        max_turns: keep at most this many user turns per session.
        with_completions: attach the assistant answers as ``completions``.

    Raises:
        ValueError: the file is not a JSON array.
    """
    data = orjson.loads(Path(path).read_bytes())
    if not isinstance(data, list):
        raise ValueError(f"{path}: a ShareGPT file is a JSON array of conversations")
    emitted = 0
    for position, item in enumerate(data):
        if max_sessions is not None and emitted >= max_sessions:
            return
        if not isinstance(item, dict):
            continue
        session = _session(item, position, max_turns, with_completions)
        if session is not None:
            emitted += 1
            yield session


def _session(item: dict[str, Any], position: int, max_turns: int | None, with_completions: bool) -> SessionEntry | None:
    prompts: list[str] = []
    answers: list[list[str]] = []
    for message in item.get("conversations") or []:
        if not isinstance(message, dict):
            continue
        role = str(message.get("from", message.get("role", ""))).lower()
        value = message.get("value", message.get("content"))
        text = value if isinstance(value, str) else ""
        if not text.strip():
            continue
        if role in USER_ROLES:
            prompts.append(text)
            answers.append([])
        elif role in ASSISTANT_ROLES and prompts:
            answers[-1].append(text)
    if max_turns is not None:
        del prompts[max_turns:], answers[max_turns:]
    if not prompts:
        return None
    session_id = item.get("id")
    return SessionEntry(
        session_id=str(session_id) if session_id is not None else position,
        prompts=tuple(prompts),
        completions=tuple("\n".join(parts) for parts in answers) if with_completions else None,
    )
