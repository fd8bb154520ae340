"""The pure checks that turn a request body into an engine prompt, in vLLM 0.32's order and words.

First the pre-validators of vLLM's request models (``openai/*/protocol.py``), then the schema
(:mod:`.bodies`), then ``TokenizeParams`` (``renderers/params.py``), ``get_max_tokens``
(``serve/utils/api_utils.py``), ``SamplingParams._verify_args`` and the input processor's
prompt checks. Everything here is pure: no I/O, no engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from strata_enginesim.domain.tokenizer import SimTokenizer
from strata_enginesim.handlers.bodies import (
    Body,
    ChatBody,
    CompletionBody,
    TokenizeChatBody,
    TokenizeCompletionBody,
)
from strata_enginesim.handlers.errors import ApiError, from_validation_error, invalid, schema_error

__all__ = [
    "PromptPlan",
    "check_model",
    "parse_body",
    "parse_tokenize_body",
    "plan_chat",
    "plan_completion",
    "prompt_token_ids",
]

_log = logging.getLogger(__name__)
_SALT_FORBIDDEN: Final = frozenset("@/\\\x00")
_MAX_SALT_CHARS: Final = 128


@dataclass(frozen=True)
class PromptPlan:
    """One prompt, tokenized and checked, with its resolved output budget."""

    token_ids: list[int]
    max_tokens: int
    min_tokens: int


B = TypeVar("B", bound=Body)


def parse_body(cls: type[B], data: object) -> B:
    """Validate a decoded JSON body as vLLM does: its pre-validators first, then the schema.

    Raises:
        ApiError: a failed check (vLLM's message and parameter) or schema error.
    """
    if isinstance(data, dict):
        if cls is CompletionBody:
            _check_prompt_present(data)
            _check_stream_options(data)
            _check_cache_salt(data)
        elif cls is ChatBody:
            _check_generation_prompt(data)
            _check_stream_options(data)
            _check_cache_salt(data)
        elif cls is TokenizeChatBody:
            _check_generation_prompt(data)
    body = _validate(cls, data)
    if isinstance(body, list):
        raise schema_error(body)
    return body


def parse_tokenize_body(data: object) -> TokenizeCompletionBody | TokenizeChatBody:
    """Validate a ``/tokenize`` body: the prompt form, else the chat form (both error lists on failure)."""
    if isinstance(data, dict) and "messages" in data:
        _check_generation_prompt(data)
    completion = _validate(TokenizeCompletionBody, data)
    if not isinstance(completion, list):
        return completion
    chat = _validate(TokenizeChatBody, data)
    if not isinstance(chat, list):
        return chat
    raise schema_error(completion + chat)


def _validate(cls: type[B], data: object) -> B | list[dict[str, Any]]:
    try:
        body = cls.model_validate(data, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as exc:
        return from_validation_error(exc)
    if body.model_extra:
        _log.debug("The following fields were present in the request but ignored: %s", set(body.model_extra))
    return body


def check_model(model: str | None, served_model_name: str) -> None:
    """Raise vLLM's 404 unless `model` is empty or the served name."""
    if model and model != served_model_name:
        raise ApiError(
            f"The model `{model}` does not exist. Valid aliases: {served_model_name}.",
            err_type="NotFoundError",
            status=404,
            param="model",
        )


def plan_completion(body: CompletionBody, tokenizer: SimTokenizer, max_model_len: int) -> PromptPlan:
    """Tokenize and check a completion request (one prompt; the simulator serves ``n=1``)."""
    _check_n(body.n)
    prompts = _split_prompts(body.prompt)
    if not prompts:
        raise ApiError("You must pass at least one prompt")
    if len(prompts) > 1:
        raise invalid(f"The simulated engine serves one prompt per request, got {len(prompts)}.", parameter="prompt")
    requested = 16 if body.max_tokens is None else body.max_tokens  # vLLM maps null to the field default
    _check_output_budget(requested, max_model_len, "max_tokens")
    prompt = prompts[0]
    if isinstance(prompt, str):
        ids = _tokenize_text(prompt, tokenizer, max_model_len, add_special_tokens=body.add_special_tokens)
    else:
        ids = _check_prompt_len(list(prompt), max_model_len)
    return _finish_plan(ids, requested, body.min_tokens, tokenizer, max_model_len)


def plan_chat(body: ChatBody, tokenizer: SimTokenizer, max_model_len: int) -> PromptPlan:
    """Apply the chat template, tokenize and check a chat request."""
    _check_n(body.n)
    requested: int | None
    if body.max_completion_tokens is not None:
        requested, param = body.max_completion_tokens, "max_completion_tokens"
    else:
        requested, param = body.max_tokens, "max_tokens"
    _check_output_budget(requested or 0, max_model_len, param)
    text = tokenizer.apply_chat_template(
        body.messages,
        add_generation_prompt=body.add_generation_prompt,
        continue_final_message=body.continue_final_message,
    )
    ids = _tokenize_text(text, tokenizer, max_model_len, add_special_tokens=body.add_special_tokens)
    return _finish_plan(ids, requested, body.min_tokens, tokenizer, max_model_len)


def prompt_token_ids(body: TokenizeCompletionBody | TokenizeChatBody, tokenizer: SimTokenizer) -> list[int]:
    """Token ids of a ``/tokenize`` body (no length limit, as vLLM's tokenize route)."""
    if isinstance(body, TokenizeCompletionBody):
        return tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens)
    text = tokenizer.apply_chat_template(
        body.messages,
        add_generation_prompt=body.add_generation_prompt,
        continue_final_message=body.continue_final_message,
    )
    return tokenizer.encode(text, add_special_tokens=body.add_special_tokens)


def _finish_plan(
    ids: list[int], requested: int | None, min_tokens: int, tokenizer: SimTokenizer, max_model_len: int
) -> PromptPlan:
    room = max_model_len - len(ids)
    max_tokens = room if requested is None else min(room, requested)
    if max_tokens < 1:
        raise invalid(f"max_tokens must be at least 1, got {max_tokens}.", parameter="max_tokens", value=max_tokens)
    if min_tokens < 0:
        raise invalid(f"min_tokens must be greater than or equal to 0, got {min_tokens}.")
    if min_tokens > max_tokens:
        raise invalid(f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.")
    if not ids:
        raise invalid("The decoder prompt cannot be empty")
    if max(ids) >= tokenizer.vocab_size:
        raise invalid(f"Token id {max(ids)} is out of vocabulary")
    return PromptPlan(token_ids=ids, max_tokens=max_tokens, min_tokens=min_tokens)


def _split_prompts(prompt: list[int] | list[list[int]] | str | list[str] | None) -> list[str | list[int]]:
    """The prompts of a completion request (vLLM accepts a batch; the simulator checks for one)."""
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [[p for p in prompt if isinstance(p, int)]]
    return [p for p in prompt if isinstance(p, str | list)]


def _tokenize_text(text: str, tokenizer: SimTokenizer, max_model_len: int, *, add_special_tokens: bool) -> list[int]:
    max_chars = max_model_len * tokenizer.max_chars_per_token
    if len(text) > max_chars:
        raise invalid(
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
            f"{len(text)} characters (more than {max_chars} characters, which is the upper bound for "
            f"{max_model_len} input tokens). Please reduce the length of the input prompt.",
            parameter="input_text",
            value=len(text),
        )
    # vLLM lets the tokenizer truncate at max_model_len + 1, hence "at least" in the message.
    return _check_prompt_len(
        tokenizer.encode(text, add_special_tokens=add_special_tokens)[: max_model_len + 1], max_model_len
    )


def _check_prompt_len(ids: list[int], max_model_len: int) -> list[int]:
    if len(ids) > max_model_len:
        qualifier = "at least " if len(ids) == max_model_len + 1 else ""
        raise invalid(
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
            f"{qualifier}{len(ids)} input tokens, which exceeds this limit even without any output tokens. "
            "Please reduce the length of the input prompt.",
            parameter="input_tokens",
            value=len(ids),
        )
    return ids


def _check_output_budget(requested: int, max_model_len: int, param: str) -> None:
    if requested > max_model_len:
        raise invalid(
            f"{param}={requested} cannot be greater than max_model_len={max_model_len}. "
            "Please request fewer output tokens.",
            parameter=param,
            value=requested,
        )


def _check_n(n: int | None) -> None:
    if n is not None and n != 1:
        raise invalid(f"The simulated engine serves n=1 only, got n={n}.", parameter="n", value=n)


def _check_prompt_present(data: dict[str, Any]) -> None:
    prompt = data.get("prompt")
    embeds = data.get("prompt_embeds")
    if (prompt is None or prompt == "") and (embeds is None or embeds == []):
        raise invalid("Either prompt or prompt_embeds must be provided and non-empty.", parameter="prompt")


def _check_stream_options(data: dict[str, Any]) -> None:
    if data.get("stream_options") and not data.get("stream"):
        raise invalid("Stream options can only be defined when `stream=True`.", parameter="stream_options")


def _check_generation_prompt(data: dict[str, Any]) -> None:
    if data.get("continue_final_message") and data.get("add_generation_prompt"):
        raise invalid("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")


def _check_cache_salt(data: dict[str, Any]) -> None:
    salt = data.get("cache_salt")
    if salt is None:
        return
    if not isinstance(salt, str) or not salt:
        raise invalid("Parameter 'cache_salt' must be a non-empty string if provided.", parameter="cache_salt")
    if len(salt) > _MAX_SALT_CHARS or any(ch in _SALT_FORBIDDEN for ch in salt):
        raise invalid(
            "Parameter 'cache_salt' must be at most 128 characters and must not contain '@', '/', '\\\\', or NUL.",
            parameter="cache_salt",
        )
