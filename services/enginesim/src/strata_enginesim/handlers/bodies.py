"""Request bodies of the OpenAI routes: the fields of vLLM 0.32's request models the simulator uses.

Mirrors ``openai/completion/protocol.py`` (CompletionRequest), ``openai/chat_completion/protocol.py``
(ChatCompletionRequest) and ``serve/tokenize/protocol.py`` with the same types and defaults,
so pydantic reports the same schema errors. Unknown fields are kept in ``model_extra`` and
ignored, as vLLM does (``extra="allow"``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Body",
    "ChatBody",
    "CompletionBody",
    "DetokenizeBody",
    "StreamOptions",
    "TokenizeChatBody",
    "TokenizeCompletionBody",
]

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

TokenId = Annotated[int, Field(ge=0)]


class Body(BaseModel):
    """Base of every body: unknown fields allowed."""

    model_config = ConfigDict(extra="allow")


class StreamOptions(Body):
    """``stream_options``; both default to false in vLLM 0.32."""

    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class _GenerateBody(Body):
    model: str | None = None
    seed: int | None = Field(None, ge=_INT64_MIN, le=_INT64_MAX)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    stop: str | list[str] | None = Field(default_factory=list)
    stop_token_ids: list[int] | None = Field(default_factory=list)
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    priority: int = Field(0, ge=_INT64_MIN, le=_INT64_MAX)
    request_id: str | None = None
    return_token_ids: bool | None = None
    cache_salt: str | None = Field(None, min_length=1, max_length=1024)
    kv_transfer_params: dict[str, Any] | None = None


class CompletionBody(_GenerateBody):
    """``POST /v1/completions`` (and its render twin)."""

    prompt: list[TokenId] | list[list[TokenId]] | str | list[str] | None = None
    max_tokens: int | None = 16
    n: int = 1
    add_special_tokens: bool = True


class ChatBody(_GenerateBody):
    """``POST /v1/chat/completions`` (and its render twin)."""

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = 1
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False


class TokenizeCompletionBody(Body):
    """``POST /tokenize`` with a prompt."""

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeChatBody(Body):
    """``POST /tokenize`` with messages."""

    model: str | None = None
    messages: list[dict[str, Any]]
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False
    continue_final_message: bool = False
    add_special_tokens: bool = False


class DetokenizeBody(Body):
    """``POST /detokenize``."""

    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, le=_INT64_MAX)]]
