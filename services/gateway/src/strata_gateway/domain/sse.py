"""Server-sent events from an engine: framing, usage, the usage-only chunk, stream errors.

vLLM frames every event as ``data: <json>\\n\\n`` and ends with ``data: [DONE]\\n\\n``
(vllm-interfaces.md §3). :class:`SseFramer` cuts a byte stream into whole events (so
each is relayed as soon as it is complete, never more than one event held back);
:class:`StreamTap` looks at each event without rewriting it:

* a chunk with a ``usage`` object updates the request's usage (the last one wins:
  with ``continuous_usage_stats`` every chunk carries the cumulative count);
* the usage-only chunk (``"choices": []``) is dropped when the client did not ask for
  usage (the gateway requested it for the ledger);
* ``data: [DONE]`` marks a complete stream; an event whose JSON holds an ``error``
  object is an engine's mid-stream failure (relayed as is).

Only events that mention ``"usage": {`` or start with ``{"error"`` are parsed; the
others are passed through as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = ["DONE", "SseFramer", "StreamTap", "Usage", "usage_of_body"]

DONE: Final = b"data: [DONE]\n\n"
_SEPARATOR: Final = b"\n\n"


@dataclass
class Usage:
    """Token counts of one request, as the engine reported them (zeros until known)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    known: bool = False

    def update(self, usage: Any) -> None:
        """Take the counts from an OpenAI `usage` object (ignored when malformed)."""
        if not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return
        self.prompt_tokens, self.completion_tokens, self.known = max(prompt, 0), max(completion, 0), True
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if isinstance(cached, int) and cached >= 0:
            self.cached_tokens = cached


def usage_of_body(body: bytes) -> Usage:
    """The usage of a non-streamed response body (zeros, `known=False`, when absent)."""
    usage = Usage()
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return usage
    if isinstance(parsed, dict):
        usage.update(parsed.get("usage"))
    return usage


class SseFramer:
    """Splits an SSE byte stream into complete events (each with its ``\\n\\n``)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the events they completed, in order."""
        buffer = self._buffer + data if self._buffer else data
        if _SEPARATOR not in buffer:
            self._buffer = buffer
            return []
        parts = buffer.split(_SEPARATOR)
        self._buffer = parts.pop()
        return [part + _SEPARATOR for part in parts if part]

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet complete."""
        return self._buffer


class StreamTap:
    """Watches the events of one stream: usage, completion, errors, what to relay.

    Args:
        client_usage: whether the client asked for the usage chunk itself.
    """

    def __init__(self, client_usage: bool) -> None:
        self.client_usage = client_usage
        self.usage = Usage()
        self.done = False
        self.error: str | None = None
        self.events = 0

    def inspect(self, event: bytes) -> bool:
        """Look at one complete event; True when it must be relayed to the client."""
        self.events += 1
        if not event.startswith(b"data:"):
            return True
        payload = event[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return True
        has_usage = b'"usage":{' in payload or b'"usage": {' in payload
        if not has_usage and not payload.startswith(b'{"error"'):
            return True
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        error = chunk.get("error")
        if isinstance(error, dict):
            self.error = str(error.get("message") or "engine stream error")
            return True
        self.usage.update(chunk.get("usage"))
        return self.client_usage or chunk.get("choices") != []
