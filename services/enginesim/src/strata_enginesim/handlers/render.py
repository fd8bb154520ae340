"""The ``/render`` routes' GenerateRequest: what vLLM would hand its engine, without generating.

Shapes from vLLM 0.32's ``entrypoints/scale_out/render/serving.py`` and
``token_in_token_out/protocol.py``; ``sampling_params`` is vLLM's msgspec SamplingParams,
serialized with defaults omitted (``sampling_params.py``), so only the fields the
simulator's requests can set are reproduced.
"""

from __future__ import annotations

from typing import Any, Final

from strata_enginesim.handlers.bodies import ChatBody, CompletionBody
from strata_enginesim.handlers.requests import PromptPlan

__all__ = ["generate_request"]

_SAMPLING_EPS: Final = 1e-5  # below this temperature vLLM samples greedily
_OUTPUT_KIND_DELTA: Final = 1
_OUTPUT_KIND_FINAL_ONLY: Final = 2

Json = dict[str, Any]


def generate_request(body: CompletionBody | ChatBody, plan: PromptPlan, request_id: str) -> Json:
    """One GenerateRequest as ``POST /v1/{chat/}completions/render`` returns it."""
    stream = bool(body.stream)
    options = body.stream_options.model_dump() if stream and body.stream_options is not None else None
    return {
        "request_id": request_id,
        "token_ids": plan.token_ids,
        "token_offsets": None,
        "features": None,
        "content_parts": None,
        "sampling_params": sampling_params(body, plan),
        "model": body.model,
        "reasoning_ended": None,
        "reasoning_parser_kwargs": None,
        "return_token_ids": None,
        "output_mode": "tokens",
        "stream": stream,
        "stream_options": options,
        "cache_salt": body.cache_salt,
        "priority": body.priority,
        "kv_transfer_params": body.kv_transfer_params,
        "ec_transfer_params": None,
    }


def sampling_params(body: CompletionBody | ChatBody, plan: PromptPlan) -> Json:
    """vLLM's SamplingParams as JSON: fields at their defaults are left out, in field order."""
    temperature = 1.0 if body.temperature is None else float(body.temperature)
    out: Json = {
        "presence_penalty": float(body.presence_penalty or 0.0),
        "frequency_penalty": float(body.frequency_penalty or 0.0),
        "repetition_penalty": 1.0 if body.repetition_penalty is None else float(body.repetition_penalty),
        "temperature": temperature,
    }
    if temperature >= _SAMPLING_EPS:  # greedy sampling resets top_p, top_k and min_p to their defaults
        out["top_p"] = 1.0 if body.top_p is None else float(body.top_p)
        if body.top_k:
            out["top_k"] = body.top_k
        out["min_p"] = float(body.min_p or 0.0)
    if body.seed is not None:
        out["seed"] = body.seed
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    out["stop"] = stop
    out["stop_token_ids"] = list(body.stop_token_ids or [])
    if body.ignore_eos:
        out["ignore_eos"] = True
    out["max_tokens"] = plan.max_tokens
    if plan.min_tokens:
        out["min_tokens"] = plan.min_tokens
    if not body.skip_special_tokens:
        out["skip_special_tokens"] = False
    if body.include_stop_str_in_output:
        out["include_stop_str_in_output"] = True
    out["output_kind"] = _OUTPUT_KIND_DELTA if body.stream else _OUTPUT_KIND_FINAL_ONLY
    out["skip_clone"] = True
    longest_stop = max((len(s) for s in stop), default=0)
    if longest_stop > 1 and not body.include_stop_str_in_output:
        out["output_text_buffer_length"] = longest_stop - 1
    if body.kv_transfer_params:
        out["extra_args"] = {"kv_transfer_params": body.kv_transfer_params}
    out["bad_words"] = []
    out["skip_reading_prefix_cache"] = False
    return out
