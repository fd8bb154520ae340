"""Build one OpenAI request and measure its response into a :class:`RequestRecord`.

Timing (all ``time.perf_counter`` = CLOCK_MONOTONIC, seconds from the run start ``t0``)::

    sent_s ── POST ──▶ headers ──▶ chunk ─ chunk ─ … ─ chunk [usage] [DONE] ─ EOF
                                   │first_token_s  token_times_s[i] …       │end_s (last read)

A chunk is *token-bearing* when it has ``choices`` and either its cumulative
``usage.completion_tokens`` grew (it carried that many tokens) or, without per-chunk usage,
it has text (counted as one token). All events delivered by one network read share that
read's arrival time. The stream is read to EOF so the keep-alive connection is reused.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

from strata_bench.client.config import EndpointConfig
from strata_bench.client.sse import DONE, SSEDecoder, inspect_chunk
from strata_bench.model import Message, PlannedRequest, RequestRecord

__all__ = ["Prepared", "base_headers", "build_request", "execute", "resolve_model", "turn_messages"]

_ERROR_CHARS = 300
ErrorType = Literal["http", "timeout", "connect", "cancelled", "protocol"]


@dataclass(slots=True)
class Prepared:
    """A request ready to send: body bytes, headers, and the conversation it carries."""

    body: bytes
    headers: dict[str, str]
    messages: list[Message]


def base_headers(cfg: EndpointConfig) -> dict[str, str]:
    """Headers common to every request of a run (computed once per run)."""
    headers = {"Content-Type": "application/json"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    if cfg.routing_strategy:
        headers["routing-strategy"] = cfg.routing_strategy
    headers.update(cfg.headers)
    return headers


def turn_messages(planned: PlannedRequest) -> list[Message]:
    """The new messages of this turn: ``messages``, else ``prompt`` as one user message."""
    if planned.messages is not None:
        return list(planned.messages)
    return [{"role": "user", "content": planned.prompt or ""}]


def build_request(
    cfg: EndpointConfig, model: str, planned: PlannedRequest, history: list[Message], headers: dict[str, str]
) -> Prepared:
    """Serialise `planned` after the session `history` (empty for a first turn or no session).

    Chat sends ``history + new messages``. Completions sends the plan's ``prompt`` as is when
    there is no history, else the concatenated contents of history and new messages, so each
    turn's prompt starts with the previous prompt and answer (a reusable prefix).
    """
    messages = history + turn_messages(planned)
    body: dict[str, Any] = {"model": model, "max_tokens": planned.max_tokens, "stream": cfg.stream}
    if cfg.api == "chat":
        body["messages"] = messages
    elif not history and planned.prompt is not None:
        body["prompt"] = planned.prompt
    else:
        body["prompt"] = "".join(m["content"] for m in messages)
    if cfg.ignore_eos:
        body["ignore_eos"] = True
    if cfg.stream and cfg.include_usage:
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": cfg.continuous_usage}
    body.update(cfg.extra_body)
    if planned.headers:
        headers = {**headers, **planned.headers}
    return Prepared(orjson.dumps(body), headers, messages)


async def resolve_model(http: aiohttp.ClientSession, cfg: EndpointConfig) -> str:
    """``cfg.model``, else the first model listed by ``GET /v1/models``."""
    if cfg.model:
        return cfg.model
    async with http.get(cfg.base_url.rstrip("/") + "/v1/models", headers=base_headers(cfg)) as resp:
        resp.raise_for_status()
        listing = orjson.loads(await resp.read())
    return str(listing["data"][0]["id"])


async def execute(
    http: aiohttp.ClientSession,
    cfg: EndpointConfig,
    prepared: Prepared,
    rec: RequestRecord,
    t0: float,
    *,
    keep_text: bool,
) -> str:
    """Send `prepared`, fill `rec` in place (times, tokens, engine, status, error) and return
    the generated text ("" unless `keep_text`). Never raises except ``CancelledError``
    (re-raised after the record is marked ``cancelled``)."""
    clock = time.perf_counter
    parts: list[str] | None = [] if keep_text else None
    try:
        async with asyncio.timeout(cfg.timeout_s):
            rec.sent_s = clock() - t0
            async with http.post(cfg.url, data=prepared.body, headers=prepared.headers) as resp:
                rec.status = resp.status
                rec.engine = next((v for h in cfg.engine_headers if (v := resp.headers.get(h))), None)
                if resp.status != 200:
                    text = await resp.text(errors="replace")
                    _fail(rec, "http", text[:_ERROR_CHARS] or str(resp.reason), t0)
                elif cfg.stream:
                    await _read_stream(resp, rec, t0, cfg.api == "chat", parts)
                else:
                    await _read_whole(resp, rec, t0, cfg.api == "chat", parts)
    except asyncio.CancelledError:
        _fail(rec, "cancelled", "cancelled", t0)
        raise
    except TimeoutError:
        _fail(rec, "timeout", f"no complete response within {cfg.timeout_s} s", t0)
    except aiohttp.ClientConnectionError as exc:
        _fail(rec, "connect", f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS], t0)
    except (aiohttp.ClientError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        _fail(rec, "protocol", f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS], t0)
    return "".join(parts) if parts else ""


def _fail(rec: RequestRecord, kind: ErrorType, message: str, t0: float) -> None:
    if rec.error_type is None:  # keep the first failure (e.g. a protocol error before a cancel)
        rec.error_type, rec.error = kind, message
    if rec.end_s is None:
        rec.end_s = time.perf_counter() - t0


class _Stream:
    """Per-response parsing state; `on_event` runs once per SSE event (hot path)."""

    __slots__ = ("chat", "counts", "cumulative", "parts", "times", "usage")

    def __init__(self, rec: RequestRecord, chat: bool, parts: list[str] | None) -> None:
        self.chat, self.parts = chat, parts
        self.times, self.counts = rec.token_times_s, rec.chunk_tokens
        self.cumulative = 0
        self.usage: dict[str, Any] | None = None

    def on_event(self, payload: bytes, now: float) -> None:
        if payload == DONE or not payload:
            return
        info = inspect_chunk(payload, chat=self.chat)
        if info.usage is not None:
            self.usage = info.usage
        if not info.has_choices:
            return
        if info.completion_tokens is not None:  # per-chunk (continuous) usage: exact count
            n = info.completion_tokens - self.cumulative
            self.cumulative = info.completion_tokens
        else:
            n = 1 if info.text else 0
        if n > 0:
            self.times.append(now)
            self.counts.append(n)
        if self.parts is not None and info.text:
            self.parts.append(info.text)


async def _read_stream(
    resp: aiohttp.ClientResponse, rec: RequestRecord, t0: float, chat: bool, parts: list[str] | None
) -> None:
    clock = time.perf_counter
    decoder, stream = SSEDecoder(), _Stream(rec, chat, parts)
    now = clock() - t0
    async for data in resp.content.iter_any():
        now = clock() - t0
        for payload in decoder.feed(data):
            stream.on_event(payload, now)
    for payload in decoder.flush():
        stream.on_event(payload, now)
    rec.end_s = now
    _apply_usage(rec, stream.usage, sum(stream.counts))
    if stream.times:
        rec.first_token_s = stream.times[0]
    else:
        _fail(rec, "protocol", "stream ended without a token-bearing chunk", t0)


async def _read_whole(
    resp: aiohttp.ClientResponse, rec: RequestRecord, t0: float, chat: bool, parts: list[str] | None
) -> None:
    raw = await resp.read()
    now = time.perf_counter() - t0
    obj = orjson.loads(raw)
    choice = obj["choices"][0]
    text = (choice["message"].get("content") or "") if chat else (choice.get("text") or "")
    if parts is not None:
        parts.append(text)
    rec.first_token_s = rec.end_s = now
    _apply_usage(rec, obj.get("usage"), 1 if text else 0)
    rec.token_times_s = [now]
    rec.chunk_tokens = [rec.completion_tokens or 1]
    rec.extra["stream"] = False


def _apply_usage(rec: RequestRecord, usage: dict[str, Any] | None, counted: int) -> None:
    if usage:
        rec.prompt_tokens = usage.get("prompt_tokens", rec.prompt_tokens)
        rec.completion_tokens = usage.get("completion_tokens", counted)
        details = usage.get("prompt_tokens_details") or {}
        rec.cached_tokens = details.get("cached_tokens")
    else:
        rec.completion_tokens = counted
