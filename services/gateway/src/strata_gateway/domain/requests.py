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

from enum import StrEnum
from typing import Any, NamedTuple

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


class ParsedRequest(NamedTuple):
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


class _Fields(NamedTuple):
    """What the gateway takes from a valid body."""

    model: str
    stream: bool
    client_usage: bool
    budget: int | None
    prompt_text: str | None
    prompt_token_ids: list[int] | None


def parse_request(endpoint: Endpoint, raw: bytes) -> ParsedRequest:
    """Decode and check a generation body; plan the upstream body.

    Bodies of the usual shapes are checked field by field here, exactly as strictly as
    the schema would (a test holds the two to the same verdicts); anything else goes
    through the pydantic model, which accepts it or words the error.

    Raises:
        GatewayError: 400 for invalid JSON, a non-object body or a schema violation.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", code="invalid_json")
    fields = _plain_fields(endpoint, body) or _model_fields(endpoint, body)
    upstream_body = raw
    if fields.stream and not fields.client_usage:
        upstream_options = {
            **(body.get("stream_options") or {}),
            "include_usage": True,
            "continuous_usage_stats": False,
        }
        upstream_body = orjson.dumps({**body, "stream_options": upstream_options})
    text, token_ids, budget = fields.prompt_text, fields.prompt_token_ids, fields.budget
    return ParsedRequest(
        endpoint=endpoint,
        model=fields.model,
        stream=fields.stream,
        client_usage=fields.client_usage,
        upstream_body=upstream_body,
        prompt_text=text,
        prompt_token_ids=token_ids,
        prompt_chars=len(text) if text is not None else len(token_ids or ()),
        max_tokens=budget if budget is None or budget >= 0 else None,
    )


def _model_fields(endpoint: Endpoint, body: dict[str, Any]) -> _Fields:
    """The fields of `body` as the pydantic schema validates them.

    Raises:
        GatewayError: 400 naming the first field that broke the schema.
    """
    schema = ChatCompletionRequest if endpoint is Endpoint.CHAT else CompletionRequest
    try:
        request = schema.model_validate(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or None
        raise bad_request(f"{where or 'body'}: {error['msg']}", param=where) from None
    stream = bool(request.stream)
    options = request.stream_options
    text, token_ids = _prompt(request)
    budget = request.max_tokens
    if isinstance(request, ChatCompletionRequest) and budget is None:
        budget = request.max_completion_tokens
    return _Fields(
        model=request.model,
        stream=stream,
        client_usage=stream and options is not None and bool(options.include_usage),
        budget=budget,
        prompt_text=text,
        prompt_token_ids=token_ids,
    )


def _plain_fields(endpoint: Endpoint, body: dict[str, Any]) -> _Fields | None:
    """The fields of a body of the usual shapes, or None to leave the verdict to :func:`_model_fields`.

    Accepts only what the strict schema accepts (`type(x) is int` also keeps booleans out
    of integer fields, as strict mode does); every shape it is unsure of returns None.
    """
    model = body.get("model")
    stream = body.get("stream")
    options = body.get("stream_options")
    max_tokens = body.get("max_tokens")
    user = body.get("user")
    if (
        type(model) is not str
        or not model
        or not (stream is None or type(stream) is bool)
        or not (max_tokens is None or type(max_tokens) is int)
        or not (user is None or type(user) is str)
    ):
        return None
    stream = bool(stream)
    client_usage = False
    if options is not None:
        if type(options) is not dict:
            return None
        include = options.get("include_usage", True)  # vLLM: true once the object is sent
        continuous = options.get("continuous_usage_stats")
        if not (include is None or type(include) is bool) or not (continuous is None or type(continuous) is bool):
            return None
        client_usage = stream and bool(include)
    if endpoint is Endpoint.CHAT:
        text = _plain_chat_text(body.get("messages"))
        completion_budget = body.get("max_completion_tokens")
        if text is None or not (completion_budget is None or type(completion_budget) is int):
            return None
        budget = max_tokens if max_tokens is not None else completion_budget
        return _Fields(model, stream, client_usage, budget, text, None)
    prompt = body.get("prompt")
    if type(prompt) is str:
        return _Fields(model, stream, client_usage, max_tokens, prompt, None)
    if type(prompt) is list and prompt:
        if all(type(item) is str for item in prompt):
            return _Fields(model, stream, client_usage, max_tokens, " ".join(prompt), None)
        if all(type(item) is int for item in prompt):
            return _Fields(model, stream, client_usage, max_tokens, None, prompt)
    return None


def _plain_chat_text(messages: Any) -> str | None:
    """The routing text of well-formed chat messages (as :func:`_prompt` joins it), else None."""
    if type(messages) is not list or not messages:
        return None
    parts: list[str] = []
    for message in messages:
        if type(message) is not dict or type(message.get("role")) is not str:
            return None
        content = message.get("content")
        if type(content) is str:
            parts.append(content)
        elif type(content) is list:
            for part in content:
                if type(part) is not dict:
                    return None
                if type(part.get("text")) is str:
                    parts.append(part["text"])
        elif content is not None:
            return None
    return " ".join(parts)


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
