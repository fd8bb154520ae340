"""AIBrix workload files, read and written, and their conversion to and from plans.

One entry per dispatch time; every request of an entry is sent at that time::

    {"timestamp": 19, "requests": [{"prompt": "...", "prompt_length": 101,
                                    "output_length": null, "session_id": 0}]}

The file is a JSON array of entries or JSONL (one entry per line); both are read, and
extra keys (agent traces' ``schema_version`` and ``events``) are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from strata_bench.model import PlannedRequest

__all__ = [
    "WorkloadEntry",
    "WorkloadRequest",
    "plan_from_workload",
    "read_aibrix_workload",
    "workload_from_plan",
    "write_aibrix_workload",
]


@dataclass(frozen=True)
class WorkloadRequest:
    """One request of an entry (``prompt_length`` is in the generator's tokenizer)."""

    prompt: str
    prompt_length: int | None = None
    output_length: int | None = None
    session_id: int | str | None = None


@dataclass(frozen=True)
class WorkloadEntry:
    """Requests dispatched together at `timestamp_ms` (milliseconds from the start)."""

    timestamp_ms: int
    requests: tuple[WorkloadRequest, ...]


def read_aibrix_workload(path: str | Path) -> list[WorkloadEntry]:
    """Entries of a JSON-array or JSONL workload file.

    Raises:
        ValueError: an entry lacks ``timestamp`` or ``requests`` (position named).
    """
    raw = Path(path).read_bytes()
    if raw.lstrip().startswith(b"["):
        items: list[Any] = orjson.loads(raw)
    else:
        items = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    entries: list[WorkloadEntry] = []
    for position, item in enumerate(items):
        try:
            requests = tuple(_request(r) for r in item["requests"])
            entries.append(WorkloadEntry(int(item["timestamp"]), requests))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: entry {position}: {exc!r}") from exc
    return entries


def write_aibrix_workload(entries: Iterable[WorkloadEntry], path: str | Path, *, jsonl: bool = True) -> None:
    """Write entries as JSONL (default, AIBrix's default output format) or a JSON array."""
    objects = [{"timestamp": e.timestamp_ms, "requests": [_request_json(r) for r in e.requests]} for e in entries]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        target.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in objects))
    else:
        target.write_bytes(orjson.dumps(objects))


def workload_from_plan(plan: Sequence[PlannedRequest]) -> list[WorkloadEntry]:
    """Group a plan into AIBrix entries by millisecond (chat requests send their last message).

    ``prompt_length`` is the plan's ``prompt_tokens``, ``output_length`` its ``max_tokens``.
    """
    grouped: dict[int, list[WorkloadRequest]] = {}
    for request in sorted(plan, key=lambda r: r.at_s):
        if request.prompt is not None:
            text = request.prompt
        elif request.messages:
            text = request.messages[-1].get("content", "")
        else:
            text = ""
        grouped.setdefault(round(request.at_s * 1000), []).append(
            WorkloadRequest(text, request.prompt_tokens, request.max_tokens, request.session_id)
        )
    return [WorkloadEntry(ts, tuple(reqs)) for ts, reqs in grouped.items()]


def plan_from_workload(
    entries: Iterable[WorkloadEntry],
    *,
    default_max_tokens: int = 128,
    chat: bool = False,
    trust_prompt_length: bool = False,
) -> list[PlannedRequest]:
    """A plan sending each request at its entry's time.

    Requests with a ``session_id`` become chat turns of that session (numbered in order
    of appearance); others are completion prompts unless `chat`.

    Args:
        entries: the workload.
        default_max_tokens: output length where ``output_length`` is null (AIBrix 128).
        chat: send session-less requests as chat messages too.
        trust_prompt_length: state ``prompt_length`` as the exact prompt length (only if
            the file was generated with the target tokenizer; AIBrix's Mooncake files
            record the untrimmed length).
    """
    plan: list[PlannedRequest] = []
    turns: dict[str, int] = {}
    for entry in sorted(entries, key=lambda e: e.timestamp_ms):
        for request in entry.requests:
            session = None if request.session_id is None else str(request.session_id)
            as_chat = chat or session is not None
            turn = 0
            if session is not None:
                turn = turns.get(session, 0)
                turns[session] = turn + 1
            plan.append(
                PlannedRequest(
                    index=len(plan),
                    at_s=entry.timestamp_ms / 1000.0,
                    max_tokens=request.output_length or default_max_tokens,
                    prompt=None if as_chat else request.prompt,
                    messages=[{"role": "user", "content": request.prompt}] if as_chat else None,
                    session_id=session,
                    turn=turn,
                    prompt_tokens=request.prompt_length if trust_prompt_length and not as_chat else None,
                )
            )
    return plan


def _request(obj: dict[str, Any]) -> WorkloadRequest:
    prompt_length = obj.get("prompt_length")
    output_length = obj.get("output_length")
    return WorkloadRequest(
        prompt=str(obj["prompt"]),
        prompt_length=None if prompt_length is None else int(prompt_length),
        output_length=None if output_length is None else int(output_length),
        session_id=obj.get("session_id"),
    )


def _request_json(request: WorkloadRequest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt": request.prompt,
        "prompt_length": request.prompt_length,
        "output_length": request.output_length,
    }
    if request.session_id is not None:
        out["session_id"] = request.session_id
    return out
