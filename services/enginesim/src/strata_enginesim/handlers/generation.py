"""Run one generation request on the engine and answer it as vLLM does: JSON or SSE.

The first engine output is awaited before anything is sent, so a :class:`RequestRejected`
(raised by the engine before its first output) still becomes a JSON 400. After the SSE
head, an engine failure becomes an error event followed by ``[DONE]``. However the
request ends (finished, failed, client gone, handler cancelled) the engine iterator is
closed, which aborts the request in the engine.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from strata_enginesim.domain.tokenizer import SimTokenizer
from strata_enginesim.domain.types import EngineCore, GenerateRequest, TokenOutput
from strata_enginesim.handlers import shapes
from strata_enginesim.handlers.errors import ApiError, from_exception, json_response, sse_error_event
from strata_enginesim.handlers.metrics import RequestTracker
from strata_enginesim.handlers.streaming import DONE, open_event_stream, sse_event

__all__ = ["Reply", "respond"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """How a request is answered: route flavour, ids and the client's output options.

    Attributes:
        chat: chat completions (else text completions).
        request_id: the response ``id`` (``cmpl-…`` / ``chatcmpl-…``).
        model: the served model name echoed in responses.
        fingerprint: the ``system_fingerprint`` value.
        prompt_token_ids: the prompt, for usage and ``return_token_ids``.
        return_token_ids: add prompt and output token ids to the response.
        include_usage: send the trailing usage chunk (streams).
        continuous_usage: put running usage on every chunk (streams).
        prompt_tokens_details: report ``cached_tokens`` (``--enable-prompt-tokens-details``).
        skip_special_tokens: drop special tokens from the output text.
    """

    chat: bool
    request_id: str
    model: str
    fingerprint: str
    prompt_token_ids: list[int]
    return_token_ids: bool
    include_usage: bool
    continuous_usage: bool
    prompt_tokens_details: bool
    skip_special_tokens: bool


async def respond(
    request: web.Request,
    engine: EngineCore,
    tokenizer: SimTokenizer,
    generate: GenerateRequest,
    reply: Reply,
    *,
    stream: bool,
    tracker: RequestTracker,
) -> web.StreamResponse:
    """Submit `generate` and write the response (side effect: the engine runs the request)."""
    outputs: AsyncIterator[TokenOutput] | None = None
    try:
        try:
            outputs = engine.generate(generate)
            first = await anext(outputs)
        except StopAsyncIteration:
            return ApiError(
                "No output received from the engine.", err_type="InternalServerError", status=500
            ).response()
        except Exception as exc:  # noqa: BLE001 - RequestRejected and engine failures become vLLM's envelope
            return from_exception(exc).response()
        writer = _Writer(reply, tokenizer, first)
        if stream:
            return await _stream(request, outputs, first, writer, tracker)
        return await _full(outputs, first, writer, tracker)
    finally:
        await _close(outputs)


async def _full(
    outputs: AsyncIterator[TokenOutput], first: TokenOutput, writer: _Writer, tracker: RequestTracker
) -> web.Response:
    token_ids: list[int] = []
    finish: str | None = None
    output: TokenOutput | None = first
    try:
        while output is not None:
            tracker.observe(output)
            token_ids.extend(output.token_ids)
            finish = _reason(output)
            output = None if finish is not None else await anext(outputs, None)
    except Exception as exc:  # noqa: BLE001 - reported to the client in vLLM's envelope
        _log.exception("engine failed during request %s", writer.reply.request_id)
        return from_exception(exc).response()
    return json_response(writer.response(token_ids, finish))


async def _stream(
    request: web.Request,
    outputs: AsyncIterator[TokenOutput],
    first: TokenOutput,
    writer: _Writer,
    tracker: RequestTracker,
) -> web.StreamResponse:
    response = await open_event_stream(request)
    try:
        if writer.reply.chat:
            await response.write(sse_event(writer.role_chunk()))
        output: TokenOutput | None = first
        try:
            while output is not None:
                tracker.observe(output)
                chunk = writer.delta_chunk(output)
                if chunk is not None:
                    await response.write(sse_event(chunk))
                output = None if output.finish_reason is not None else await anext(outputs, None)
            if writer.reply.include_usage:
                await response.write(sse_event(writer.usage_chunk()))
        except ConnectionResetError:
            raise
        except Exception as exc:  # noqa: BLE001 - after the 200 head, errors travel as an SSE event
            _log.exception("engine failed during stream %s", writer.reply.request_id)
            await response.write(sse_error_event(from_exception(exc)))
        await response.write(DONE)
        await response.write_eof()
    except ConnectionResetError:
        _log.debug("client went away during stream %s", writer.reply.request_id)
    return response


class _Writer:
    """Builds the bodies of one request; tracks what has been sent so far."""

    def __init__(self, reply: Reply, tokenizer: SimTokenizer, first: TokenOutput) -> None:
        self.reply = reply
        self._tokenizer = tokenizer
        self._cached = first.num_cached_tokens if reply.prompt_tokens_details else None
        self._created = int(time.time())
        self._completion_tokens = 0
        self._prompt_ids_sent = False

    def _usage(self) -> shapes.Usage:
        prompt = len(self.reply.prompt_token_ids)
        return shapes.Usage(prompt, self._completion_tokens, self._cached, chat=self.reply.chat)

    def _text(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=self.reply.skip_special_tokens)

    def _common(self) -> dict[str, Any]:
        return {"request_id": self.reply.request_id, "created": self._created, "model": self.reply.model}

    def response(self, token_ids: list[int], finish: str | None) -> dict[str, Any]:
        self._completion_tokens = len(token_ids)
        reply = self.reply
        build = shapes.chat_response if reply.chat else shapes.completion_response
        return build(
            **self._common(),
            text=self._text(token_ids),
            finish_reason=finish,
            token_ids=token_ids if reply.return_token_ids else None,
            prompt_token_ids=reply.prompt_token_ids if reply.return_token_ids else None,
            usage=self._usage(),
            fingerprint=reply.fingerprint,
        )

    def role_chunk(self) -> dict[str, Any]:
        reply = self.reply
        return shapes.chat_role_chunk(
            **self._common(),
            prompt_token_ids=reply.prompt_token_ids if reply.return_token_ids else None,
            usage=self._usage() if reply.continuous_usage else None,
        )

    def delta_chunk(self, output: TokenOutput) -> dict[str, Any] | None:
        """The chunk for one engine output; None for an empty one before any token (vLLM skips it)."""
        reply = self.reply
        text = self._text(output.token_ids)
        if not text and not output.token_ids and self._completion_tokens == 0:
            return None
        self._completion_tokens += len(output.token_ids)
        finish = _reason(output)
        common = {
            **self._common(),
            "text": text,
            "finish_reason": finish,
            "token_ids": list(output.token_ids) if reply.return_token_ids else None,
            "usage": self._usage() if reply.continuous_usage else None,
            "fingerprint": reply.fingerprint if finish is not None and not reply.include_usage else None,
        }
        if reply.chat:
            return shapes.chat_chunk(**common)
        prompt_ids = None
        if reply.return_token_ids and not self._prompt_ids_sent:
            prompt_ids, self._prompt_ids_sent = reply.prompt_token_ids, True
        return shapes.completion_chunk(**common, prompt_token_ids=prompt_ids)

    def usage_chunk(self) -> dict[str, Any]:
        reply = self.reply
        return shapes.usage_chunk(**self._common(), chat=reply.chat, usage=self._usage(), fingerprint=reply.fingerprint)


def _reason(output: TokenOutput) -> str | None:
    return None if output.finish_reason is None else str(output.finish_reason)


async def _close(outputs: AsyncIterator[TokenOutput] | None) -> None:
    """Close the engine iterator (aborts the request if it is still running)."""
    aclose = getattr(outputs, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
