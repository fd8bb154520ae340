"""Server-sent events as vLLM writes them.

Framing (vLLM 0.32, ``chat_completion/serving.py`` and ``completion/serving.py``): each
event is ``data: <compact JSON>\\n\\n`` and the stream ends with ``data: [DONE]\\n\\n``;
the response type is ``text/event-stream; charset=utf-8`` (Starlette's StreamingResponse).

Clients that go away are noticed by :class:`strata_runtime.disconnect.DisconnectWatch`.
"""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web

__all__ = ["DONE", "open_event_stream", "sse_event"]

DONE: Final = b"data: [DONE]\n\n"


def sse_event(payload: object) -> bytes:
    """One ``data:`` event with `payload` as compact UTF-8 JSON (pydantic's model_dump_json bytes)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def open_event_stream(request: web.Request, headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Send the 200 head of an SSE response (chunked transfer encoding)."""
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    await response.prepare(request)
    return response
