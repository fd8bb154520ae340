"""The JSON bodies of vLLM 0.32's OpenAI routes, built as plain dicts in vLLM's key order.

vLLM serializes pydantic models three ways, and clients see the differences:

* non-stream responses: ``model_dump()`` (every field, nulls included);
* stream chunks: ``model_dump_json(exclude_unset=True)`` (only the fields the server set,
  nulls it set included);
* the final usage chunk: also ``exclude_none=True``.

Field orders follow ``openai/completion/protocol.py``, ``openai/chat_completion/protocol.py``,
``serve/engine/protocol.py`` (UsageInfo, ModelCard), and were checked against a real vLLM 0.32 server.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "Usage",
    "chat_chunk",
    "chat_response",
    "chat_role_chunk",
    "completion_chunk",
    "completion_response",
    "model_list",
    "system_fingerprint",
    "usage_chunk",
]

VLLM_VERSION: Final = "0.32.0"

Json = dict[str, Any]


@dataclass(frozen=True)
class Usage:
    """Token counts of one request so far.

    Attributes:
        prompt: prompt tokens.
        completion: generated tokens (EOS included).
        cached: prompt tokens served from cache; None when prompt-token details are off.
        chat: chat routes also report ``created_cache_tokens`` (always 0 here).
    """

    prompt: int
    completion: int
    cached: int | None
    chat: bool

    def full(self) -> Json:
        """Non-stream form (every field)."""
        details = None
        if self.cached is not None:
            details = {
                "cached_tokens": self.cached,
                "created_cache_tokens": 0 if self.chat else None,
                "multimodal_tokens": None,
            }
        return {**self._counts(), "prompt_tokens_details": details, "completion_tokens_details": None}

    def final(self) -> Json:
        """Form of the trailing usage chunk (nulls dropped)."""
        out = self._counts()
        if self.cached is not None:
            details: Json = {"cached_tokens": self.cached}
            if self.chat:
                details["created_cache_tokens"] = 0
            out["prompt_tokens_details"] = details
        return out

    def running(self) -> Json:
        """Form carried by each chunk with ``continuous_usage_stats``."""
        return {**self._counts(), "completion_tokens_details": None} if self.chat else self._counts()

    def _counts(self) -> Json:
        return {
            "prompt_tokens": self.prompt,
            "total_tokens": self.prompt + self.completion,
            "completion_tokens": self.completion,
        }


def system_fingerprint(*parts: object) -> str:
    """``vllm-<version>-<hash8>`` as vLLM's default fingerprint mode, hashed from `parts`."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:8]
    return f"vllm-{VLLM_VERSION}-{digest}"


def completion_response(
    *,
    request_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    token_ids: list[int] | None,
    prompt_token_ids: list[int] | None,
    usage: Usage,
    fingerprint: str,
) -> Json:
    """Non-stream ``text_completion``."""
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": None,
        "token_ids": token_ids,
        "prompt_logprobs": None,
        "prompt_token_ids": prompt_token_ids,
        "routed_experts": None,
    }
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": fingerprint,
        "usage": usage.full(),
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def completion_chunk(
    *,
    request_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    prompt_token_ids: list[int] | None,
    token_ids: list[int] | None,
    usage: Usage | None,
    fingerprint: str | None,
) -> Json:
    """One ``text_completion`` stream chunk (`usage`/`fingerprint` only when set)."""
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": None,
        "prompt_token_ids": prompt_token_ids,
        "token_ids": token_ids,
    }
    chunk = {"id": request_id, "object": "text_completion", "created": created, "model": model, "choices": [choice]}
    return _tail(chunk, usage, fingerprint)


def chat_response(
    *,
    request_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    token_ids: list[int] | None,
    prompt_token_ids: list[int] | None,
    usage: Usage,
    fingerprint: str,
) -> Json:
    """Non-stream ``chat.completion`` (an empty ``tool_calls`` is dropped, as vLLM's serializer does)."""
    message = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "reasoning": None,
    }
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason or "stop",
        "stop_reason": None,
        "token_ids": token_ids,
        "routed_experts": None,
    }
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": fingerprint,
        "usage": usage.full(),
        "prompt_logprobs": None,
        "prompt_token_ids": prompt_token_ids,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def chat_role_chunk(
    *, request_id: str, created: int, model: str, prompt_token_ids: list[int] | None, usage: Usage | None
) -> Json:
    """The first chat chunk: the assistant role with empty content."""
    choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    chunk = _chat_head(request_id, created, model, choice)
    if usage is not None:
        chunk["usage"] = usage.running()
    chunk["prompt_token_ids"] = prompt_token_ids
    chunk["prompt_text"] = None
    return chunk


def chat_chunk(
    *,
    request_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    token_ids: list[int] | None,
    usage: Usage | None,
    fingerprint: str | None,
) -> Json:
    """A chat content chunk; the finishing one also carries ``stop_reason``."""
    choice: Json = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish_reason}
    if finish_reason is not None:
        choice["stop_reason"] = None
    choice["token_ids"] = token_ids
    return _tail(_chat_head(request_id, created, model, choice), usage, fingerprint)


def usage_chunk(*, request_id: str, created: int, model: str, chat: bool, usage: Usage, fingerprint: str) -> Json:
    """The trailing chunk with ``choices: []`` and the final usage."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    return {
        "id": request_id,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage.final(),
        "system_fingerprint": fingerprint,
    }


def model_list(*, served_model_name: str, root: str, max_model_len: int, created: int, permission_id: str) -> Json:
    """``GET /v1/models`` for one base model."""
    permission = {
        "id": f"modelperm-{permission_id}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    card = {
        "id": served_model_name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": root,
        "parent": None,
        "max_model_len": max_model_len,
        "permission": [permission],
    }
    return {"object": "list", "data": [card]}


def _chat_head(request_id: str, created: int, model: str, choice: Json) -> Json:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }


def _tail(chunk: Json, usage: Usage | None, fingerprint: str | None) -> Json:
    if usage is not None:
        chunk["usage"] = usage.running()
    if fingerprint is not None:
        chunk["system_fingerprint"] = fingerprint
    return chunk
