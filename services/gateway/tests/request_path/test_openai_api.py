"""The official `openai` client against the gateway in front of simulated vLLM engines (auth off)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import openai
import orjson
import pytest
import pytest_asyncio
from multidict import CIMultiDict

Gateway = Any  # conftest's running gateway (url, v1, sink)
Start = Callable[..., Awaitable[Any]]
MakeFake = Callable[..., Awaitable[Any]]
PROMPT = [{"role": "user", "content": "Say something about the sea."}]


@pytest_asyncio.fixture
async def sim_gateway(
    start_gateway: Start,
    sim_engine: Callable[[str], Awaitable[str]],
    register: Callable[..., Awaitable[str]],
    model: str,
) -> Gateway:
    for _ in range(2):
        await register(await sim_engine(model), model)
    return await start_gateway()


@pytest_asyncio.fixture
async def client(sim_gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim_gateway.v1, api_key="unused", max_retries=0) as api:
        yield api


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, CIMultiDict[str], Any]:
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status, CIMultiDict(response.headers), orjson.loads(await response.read())


def _envelope(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


async def test_chat_returns_the_engines_completion_with_gateway_headers(
    client: openai.AsyncOpenAI, sim_gateway: Gateway, model: str
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=PROMPT, max_tokens=6, extra_headers={"x-request-id": "my-req-1"}
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6
    assert raw.headers["x-request-id"] == "my-req-1"
    assert raw.headers["x-strata-engine"].startswith("e-")
    assert raw.headers["x-strata-strategy"] == "least-request"
    again = await client.chat.completions.with_raw_response.create(
        model=model, messages=PROMPT, max_tokens=2, extra_headers={"x-request-id": "my-req-1"}
    )
    assert again.headers["x-request-id"] == "my-req-1"
    # A reused client id is echoed, but each request keeps its own record (else one would be deduplicated away).
    first, second = sorted(await sim_gateway.sink.settled(2), key=lambda r: r.completion_tokens, reverse=True)
    assert first.client_request_id == second.client_request_id == "my-req-1"
    assert first.request_id != second.request_id
    assert first.request_id.startswith("req-")
    assert (first.status, first.stream, first.completion_tokens, second.completion_tokens) == (200, False, 6, 2)
    assert first.engine_id == raw.headers["x-strata-engine"]
    assert first.prompt_tokens == completion.usage.prompt_tokens


async def test_stream_is_relayed_and_the_injected_usage_chunk_is_stripped(
    client: openai.AsyncOpenAI, sim_gateway: Gateway, model: str
) -> None:
    stream = await client.chat.completions.with_raw_response.create(
        model=model, messages=PROMPT, max_tokens=5, stream=True
    )
    chunks = [chunk async for chunk in stream.parse()]
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk reached the client
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    await sim_gateway.sink.settled(1)
    (record,) = sim_gateway.sink.of(stream.headers["x-request-id"])
    assert (record.stream, record.completion_tokens, record.status) == (True, 5, 200)
    assert record.ttft_ms is not None
    assert record.ttft_ms <= record.latency_ms


async def test_stream_keeps_the_usage_chunk_when_the_client_asked(
    client: openai.AsyncOpenAI, sim_gateway: Gateway, model: str
) -> None:
    stream = await client.completions.create(
        model=model, prompt="once upon a time", max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert len(await sim_gateway.sink.settled(1)) == 1


async def test_non_streamed_completion(client: openai.AsyncOpenAI, model: str) -> None:
    completion = await client.completions.create(model=model, prompt="hello", max_tokens=3, extra_body={"top_k": 2})
    assert completion.object == "text_completion"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


async def test_a_repeated_prompt_reports_cached_tokens(
    start_gateway: Start,
    sim_engine: Callable[[str], Awaitable[str]],
    register: Callable[..., Awaitable[str]],
    model: str,
) -> None:
    await register(await sim_engine(model), model)  # one engine: the repeat must hit its prefix cache
    gateway = await start_gateway()
    long_prompt = [{"role": "user", "content": "the quick brown fox jumps over the lazy dog " * 40}]
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        for _ in range(2):
            completion = await api.chat.completions.create(model=model, messages=long_prompt, max_tokens=2)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    cached = completion.usage.prompt_tokens_details.cached_tokens
    assert cached is not None
    assert cached >= 32
    assert [r.cached_tokens for r in await gateway.sink.settled(2)] == [0, cached]


async def test_models_lists_what_the_registry_holds(client: openai.AsyncOpenAI, model: str) -> None:
    models = await client.models.list()
    entry = next(m for m in models.data if m.id == model)
    assert entry.owned_by == "strata"
    assert entry.model_extra is not None
    assert entry.model_extra["engines"] == 2


async def test_unknown_model_is_404(client: openai.AsyncOpenAI, sim_gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="no-such-model", messages=PROMPT)
    assert caught.value.code == "model_not_found"
    assert sim_gateway.sink.records == []  # refused before admission: nothing to bill


async def test_unknown_strategy_is_400(client: openai.AsyncOpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model=model, messages=PROMPT, extra_headers={"routing-strategy": "fastest-please"}
        )
    assert caught.value.code == "invalid_routing_strategy"
    assert caught.value.param == "routing-strategy"


async def test_bad_json_is_400_with_the_envelope(sim_gateway: Gateway) -> None:
    status, headers, body = await _post(f"{sim_gateway.v1}/chat/completions", b'{"model": "x", "messages": [')
    assert status == 400
    assert _envelope(body)["code"] == "invalid_json"
    assert headers["x-request-id"]


async def test_schema_violation_is_400_naming_the_field(client: openai.AsyncOpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.completions.create(model=model, prompt={"not": "a prompt"})  # type: ignore[arg-type]
    assert caught.value.param is not None
    assert caught.value.param.startswith("prompt")


async def test_a_too_large_body_is_413(
    start_gateway: Start,
    sim_engine: Callable[[str], Awaitable[str]],
    register: Callable[..., Awaitable[str]],
    model: str,
) -> None:
    await register(await sim_engine(model), model)
    gateway = await start_gateway(max_body_bytes=1000)
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "x" * 2000}]})
    status, _, envelope = await _post(f"{gateway.v1}/chat/completions", body)
    assert status == 413
    assert _envelope(envelope)["code"] == "request_too_large"
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        with pytest.raises(openai.APIStatusError) as caught:
            await api.chat.completions.create(model=model, messages=[{"role": "user", "content": "y" * 2000}])
    assert caught.value.status_code == 413


async def test_an_engine_400_is_passed_through_with_its_status(
    start_gateway: Start, fake_engine: MakeFake, register: Callable[..., Awaitable[str]], model: str
) -> None:
    engine = await fake_engine(model, "status_400")
    await register(engine.url, model)
    gateway = await start_gateway()
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key="unused", max_retries=0) as api:
        with pytest.raises(openai.BadRequestError) as caught:
            await api.chat.completions.create(model=model, messages=PROMPT, max_tokens=10**9)
    assert caught.value.message.endswith("max_tokens is too large")
    assert str(caught.value.code) == "400"  # the engine's own envelope (integer code), relayed as is
    (record,) = await gateway.sink.settled(1)
    assert (record.status, record.error) == (400, "engine_400")


async def test_unknown_paths_answer_with_the_envelope(sim_gateway: Gateway) -> None:
    status, _, body = await _post(f"{sim_gateway.v1}/embeddings", b"{}")
    assert status == 404
    assert _envelope(body)["code"] == "not_found"
