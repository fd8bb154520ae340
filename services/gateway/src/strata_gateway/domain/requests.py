"""Request bodies: the part of the OpenAI schema the gateway checks, and the upstream rewrite.

The gateway validates only what it relies on (`model`, `messages` / `prompt`, `stream`,
`stream_options`, the token budget) with the types the OpenAI API documents; every other
field, vLLM's extras included, is passed to the engine untouched. The models below are
also the request schemas of the gateway's OpenAPI document.

Usage is always requested upstream: a streaming request gets
``stream_options.include_usage = true`` (and ``continuous_usage_stats = false`` when the
client did not want usage, so only the final usage-only chunk appears, which the relay
then strips). A body that needs no rewrite is forwarded byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from strata_gateway.domain.errors import bad_request, unknown_strategy

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "Endpoint",
    "ParsedRequest",
    "StreamOptions",
    "choose_strategy",
    "parse_request",
]

_OPEN = ConfigDict(extra="allow", strict=True)


class Endpoint(StrEnum):
    """The generation endpoints (also the upstream paths)."""

    CHAT = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"


class StreamOptions(BaseModel):
    """`stream_options` (vLLM: `include_usage` defaults to true once the object is sent)."""

    model_config = _OPEN
    include_usage: bool | None = Field(default=True, description="Send a final usage-only chunk.")
    continuous_usage_stats: bool | None = Field(default=False, description="Cumulative usage on every chunk.")


class _Generation(BaseModel):
    model_config = _OPEN
    model: str = Field(min_length=1, description="Served model name; see GET /v1/models.")
    stream: bool | None = Field(default=False, description="Stream server-sent events.")
    stream_options: StreamOptions | None = Field(default=None, description="Streaming options.")
    max_tokens: int | None = Field(default=None, description="Most tokens to generate.")
    user: str | None = Field(default=None, description="End-user id.")


class ChatMessage(BaseModel):
    """One chat message; fields other than these are passed through."""

    model_config = _OPEN
    role: str = Field(description="system | user | assistant | tool | ...")
    content: str | list[dict[str, Any]] | None = Field(default=None, description="Text or content parts.")


class ChatCompletionRequest(_Generation):
    """POST /v1/chat/completions (other OpenAI and vLLM fields are accepted and passed through)."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_completion_tokens: int | None = Field(default=None, description="Most tokens to generate (newer name).")


class CompletionRequest(_Generation):
    """POST /v1/completions (other OpenAI and vLLM fields are accepted and passed through)."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(description="Text, texts, or token ids.")


@dataclass(frozen=True)
class ParsedRequest:
    """What the gateway needs from one generation request.

    Attributes:
        endpoint: which API was called.
        model: requested model.
        stream: whether the client streams.
        client_usage: whether the client asked for the usage chunk (else it is stripped).
        upstream_body: the bytes to send to the engine.
        prompt_text: prompt as text for the router, when it is text.
        prompt_token_ids: prompt token ids, when the client sent one tokenized prompt.
        prompt_chars: prompt size estimate (characters, or tokens for token prompts).
        max_tokens: completion budget, when given.
    """

    endpoint: Endpoint
    model: str
    stream: bool
    client_usage: bool
    upstream_body: bytes
    prompt_text: str | None
    prompt_token_ids: list[int] | None
    prompt_chars: int
    max_tokens: int | None


def parse_request(endpoint: Endpoint, raw: bytes) -> ParsedRequest:
    """Decode and check a generation body; plan the upstream body.

    Raises:
        GatewayError: 400 for invalid JSON, a non-object body or a schema violation.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", code="invalid_json")
    schema = ChatCompletionRequest if endpoint is Endpoint.CHAT else CompletionRequest
    try:
        request = schema.model_validate(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or None
        raise bad_request(f"{where or 'body'}: {error['msg']}", param=where) from None
    stream = bool(request.stream)
    options = request.stream_options
    client_usage = stream and options is not None and bool(options.include_usage)
    upstream_body = raw
    if stream and not client_usage:
        upstream_options = {
            **(body.get("stream_options") or {}),
            "include_usage": True,
            "continuous_usage_stats": False,
        }
        upstream_body = orjson.dumps({**body, "stream_options": upstream_options})
    text, token_ids = _prompt(request)
    budget = request.max_tokens
    if isinstance(request, ChatCompletionRequest) and budget is None:
        budget = request.max_completion_tokens
    return ParsedRequest(
        endpoint=endpoint,
        model=request.model,
        stream=stream,
        client_usage=client_usage,
        upstream_body=upstream_body,
        prompt_text=text,
        prompt_token_ids=token_ids,
        prompt_chars=len(text) if text is not None else len(token_ids or ()),
        max_tokens=budget if budget is None or budget >= 0 else None,
    )


def _prompt(request: ChatCompletionRequest | CompletionRequest) -> tuple[str | None, list[int] | None]:
    """Routing text (AIBrix: chat contents joined by spaces) or token ids of the prompt."""
    if isinstance(request, ChatCompletionRequest):
        parts: list[str] = []
        for message in request.messages:
            if isinstance(message.content, str):
                parts.append(message.content)
            elif message.content is not None:
                parts.extend(p["text"] for p in message.content if isinstance(p.get("text"), str))
        return " ".join(parts), None
    prompt = request.prompt
    if isinstance(prompt, str):
        return prompt, None
    if prompt and all(isinstance(item, str) for item in prompt):
        return " ".join(str(item) for item in prompt), None
    if prompt and all(isinstance(item, int) for item in prompt):
        return None, [int(item) for item in prompt if isinstance(item, int)]
    return None, None


def choose_strategy(header: str | None, principal_default: str | None, default: str, accepted: list[str]) -> str:
    """The strategy of a request: the routing-strategy header, else the key's default, else ours.

    Raises:
        GatewayError: 400 when the chosen name is not accepted.
    """
    name = (header or "").strip() or principal_default or default
    if name not in accepted:
        raise unknown_strategy(name, accepted)
    return name
