"""The types every stage of the benchmark pipeline shares.

    dataset (JSONL prompts) ──workload──▶ Plan: PlannedRequest[] (when, what, how long)
        ──client──▶ RequestRecord[] (JSONL, one per request) ──analysis──▶ Summary, tables, plots

A plan is independent of where it is sent; a record keeps everything measured about one
request so every metric can be recomputed from the JSONL alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Message", "PlannedRequest", "RequestRecord"]

Message = dict[str, str]  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class PlannedRequest:
    """One request of a workload plan.

    Attributes:
        index: position in the plan (stable id).
        at_s: scheduled send time, seconds from the start of the run (open loop);
            ignored by closed-loop runs except for ordering.
        prompt: completion prompt text, or None for chat.
        messages: chat messages of this turn (for multi-turn sessions: the new user turn
            only; the client prepends the session history it has seen).
        max_tokens: output tokens to ask for (sent with ignore_eos so the count is exact).
        session_id: session (conversation) id, for multi-turn and session caps.
        turn: 0-based turn within the session.
        think_time_s: for closed-loop sessions, pause after the previous turn's answer.
        prompt_tokens: exact prompt length in the target tokenizer, when known.
        prefix_group: shared-prefix group id (synthetic datasets), for analysis.
        headers: extra HTTP headers (e.g. routing-strategy).
    """

    index: int
    at_s: float
    max_tokens: int
    prompt: str | None = None
    messages: list[Message] | None = None
    session_id: str | None = None
    turn: int = 0
    think_time_s: float = 0.0
    prompt_tokens: int | None = None
    prefix_group: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestRecord:
    """Everything measured about one request (monotonic times in seconds from the run start).

    `scheduled_s` is when the plan said to send; `sent_s` when the client actually sent.
    Latency "from scheduled" (no coordinated omission) uses `scheduled_s`; "from send"
    uses `sent_s`. `token_times_s` holds the arrival time of every token-bearing chunk
    and `chunk_tokens` how many tokens each carried (from usage deltas when the server
    reports them, else 1).
    """

    index: int
    scheduled_s: float
    sent_s: float
    status: int = 0
    error: str | None = None
    error_type: Literal["http", "timeout", "connect", "cancelled", "protocol"] | None = None
    first_token_s: float | None = None
    end_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    engine: str | None = None
    session_id: str | None = None
    turn: int = 0
    prefix_group: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
