"""vLLM 0.32's HTTP surface for one simulated engine, as aiohttp routes.

Routes (shapes and messages from vLLM's ``entrypoints/openai``, ``entrypoints/serve`` and
``entrypoints/scale_out``; see the sibling modules for the details)::

    POST /v1/completions              POST /v1/chat/completions       (JSON or SSE)
    POST /v1/completions/render       POST /v1/chat/completions/render
    POST /tokenize   POST /detokenize   GET /v1/models   GET /version   GET /health
    GET /load        GET /kv_event_sources                GET /metrics (optional)

Handlers only decode, call the pure checks in :mod:`.requests`, and hand over to
:func:`.generation.respond`; every failure is vLLM's error envelope.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from strata_enginesim.domain.tokenizer import SimTokenizer
from strata_enginesim.domain.types import EngineCore, GenerateRequest
from strata_enginesim.handlers import shapes
from strata_enginesim.handlers.bodies import ChatBody, CompletionBody, DetokenizeBody
from strata_enginesim.handlers.errors import ApiError, invalid, json_response, parse_json_body
from strata_enginesim.handlers.generation import Reply, respond
from strata_enginesim.handlers.metrics import VllmMetrics
from strata_enginesim.handlers.render import generate_request
from strata_enginesim.handlers.requests import (
    PromptPlan,
    check_model,
    parse_body,
    parse_tokenize_body,
    plan_chat,
    plan_completion,
    prompt_token_ids,
)
from strata_runtime.disconnect import DisconnectWatch

__all__ = ["add_openai_routes"]

_PRIORITY_HEADER = "X-Vllm-Priority"


def add_openai_routes(
    app: web.Application,
    engine: EngineCore,
    tokenizer: SimTokenizer,
    *,
    served_model_name: str,
    model_root: str,
    enable_prompt_tokens_details: bool = True,
    enable_request_id_headers: bool = False,
    force_include_usage: bool = False,
    metrics: VllmMetrics,
    kv_events_config: dict[str, Any] | None = None,
    serve_metrics: bool = True,
) -> None:
    """Add the vLLM routes for `engine` to `app` (before the app starts).

    Args:
        app: the application to extend.
        engine: serves the generation routes; its ``max_model_len`` bounds prompts.
        tokenizer: turns text into the engine's token ids and back.
        served_model_name: the only accepted ``model`` (``--served-model-name``).
        model_root: ``root`` in ``/v1/models`` (the model path).
        enable_prompt_tokens_details: report ``usage.prompt_tokens_details.cached_tokens``.
        enable_request_id_headers: echo ``X-Request-Id`` on every response of `app`.
        force_include_usage: usage on every stream, as ``--enable-force-include-usage``.
        metrics: request histograms are recorded here.
        kv_events_config: ``GET /kv_event_sources`` body (vLLM: configs keyed by DP rank).
        serve_metrics: add ``GET /metrics`` from `metrics`' registry; pass False when the
            app already has one (strata_runtime's probes: give them ``metrics.registry``).
    """
    api = _OpenAIApi(
        engine,
        tokenizer,
        served_model_name=served_model_name,
        model_root=model_root,
        prompt_tokens_details=enable_prompt_tokens_details,
        force_include_usage=force_include_usage,
        metrics=metrics,
        kv_events_config=kv_events_config or {},
    )
    router = app.router
    router.add_post("/v1/completions", api.completions)
    router.add_post("/v1/chat/completions", api.chat_completions)
    router.add_post("/v1/completions/render", api.render_completions)
    router.add_post("/v1/chat/completions/render", api.render_chat)
    router.add_post("/tokenize", api.tokenize)
    router.add_post("/detokenize", api.detokenize)
    router.add_get("/v1/models", api.models)
    router.add_get("/version", api.version)
    router.add_get("/health", api.health)
    router.add_get("/load", api.load)
    router.add_get("/kv_event_sources", api.kv_event_sources)
    if serve_metrics:
        metrics.add_route(app)

    async def close_watch(_: web.Application) -> None:
        await api.watch.close()

    app.on_cleanup.append(close_watch)
    if enable_request_id_headers:
        app.on_response_prepare.append(_echo_request_id)


class _OpenAIApi:
    """The route handlers of one engine."""

    def __init__(
        self,
        engine: EngineCore,
        tokenizer: SimTokenizer,
        *,
        served_model_name: str,
        model_root: str,
        prompt_tokens_details: bool,
        force_include_usage: bool,
        metrics: VllmMetrics,
        kv_events_config: dict[str, Any],
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.served = served_model_name
        self.root = model_root
        self.details = prompt_tokens_details
        self.force_usage = force_include_usage
        self.metrics = metrics
        self.kv_events_config = kv_events_config
        self.fingerprint = shapes.system_fingerprint(
            model_root, served_model_name, engine.max_model_len, engine.block_size, engine.num_blocks
        )
        self.watch = DisconnectWatch()
        self.in_flight = 0

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        self.in_flight += 1
        try:
            with self.watch.watch(request):
                try:
                    body, plan = await self._plan(request, chat=chat)
                except ApiError as err:
                    return err.response()
                base = _base_request_id(request, body.request_id)
                request_id = f"chatcmpl-{base}" if chat else f"cmpl-{base}"
                generate = _engine_request(request, body, plan, request_id if chat else f"{request_id}-0")
                reply = self._reply(body, plan, request_id, chat=chat)
                return await respond(
                    request,
                    self.engine,
                    self.tokenizer,
                    generate,
                    reply,
                    stream=bool(body.stream),
                    tracker=self.metrics.track(),
                )
        finally:
            self.in_flight -= 1

    async def _plan(self, request: web.Request, *, chat: bool) -> tuple[CompletionBody | ChatBody, PromptPlan]:
        data = await _read_json(request)
        max_model_len = self.engine.max_model_len
        if chat:
            chat_body = parse_body(ChatBody, data)
            check_model(chat_body.model, self.served)
            return chat_body, plan_chat(chat_body, self.tokenizer, max_model_len)
        body = parse_body(CompletionBody, data)
        check_model(body.model, self.served)
        return body, plan_completion(body, self.tokenizer, max_model_len)

    def _reply(self, body: CompletionBody | ChatBody, plan: PromptPlan, request_id: str, *, chat: bool) -> Reply:
        include_usage, continuous = _usage_options(body, force=self.force_usage)
        return Reply(
            chat=chat,
            request_id=request_id,
            model=self.served,
            fingerprint=self.fingerprint,
            prompt_token_ids=plan.token_ids,
            return_token_ids=bool(body.return_token_ids),
            include_usage=include_usage,
            continuous_usage=continuous,
            prompt_tokens_details=self.details,
            skip_special_tokens=body.skip_special_tokens,
        )

    async def render_completions(self, request: web.Request) -> web.Response:
        try:
            body, plan = await self._plan(request, chat=False)
        except ApiError as err:
            return err.response()
        request_id = f"cmpl-{_base_request_id(request, body.request_id)}"
        return json_response([generate_request(body, plan, request_id)])

    async def render_chat(self, request: web.Request) -> web.Response:
        try:
            body, plan = await self._plan(request, chat=True)
        except ApiError as err:
            return err.response()
        request_id = f"chatcmpl-{_base_request_id(request, body.request_id)}"
        return json_response(generate_request(body, plan, request_id))

    async def tokenize(self, request: web.Request) -> web.Response:
        try:
            body = parse_tokenize_body(await _read_json(request))
            check_model(body.model, self.served)
        except ApiError as err:
            return err.response()
        ids = prompt_token_ids(body, self.tokenizer)
        strs = self.tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
        return json_response(
            {"count": len(ids), "max_model_len": self.engine.max_model_len, "tokens": ids, "token_strs": strs}
        )

    async def detokenize(self, request: web.Request) -> web.Response:
        try:
            body = parse_body(DetokenizeBody, await _read_json(request))
            check_model(body.model, self.served)
            if body.tokens and max(body.tokens) >= self.tokenizer.vocab_size:
                raise invalid(f"Token id {max(body.tokens)} is out of vocabulary")
        except ApiError as err:
            return err.response()
        return json_response({"prompt": self.tokenizer.decode(body.tokens, skip_special_tokens=False)})

    async def models(self, _: web.Request) -> web.Response:
        created = int(time.time())
        return json_response(
            shapes.model_list(
                served_model_name=self.served,
                root=self.root,
                max_model_len=self.engine.max_model_len,
                created=created,
                permission_id=_random_id(),
            )
        )

    async def version(self, _: web.Request) -> web.Response:
        return json_response({"version": shapes.VLLM_VERSION})

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    async def load(self, _: web.Request) -> web.Response:
        return json_response({"server_load": self.in_flight})

    async def kv_event_sources(self, _: web.Request) -> web.Response:
        return json_response(self.kv_events_config)


async def _read_json(request: web.Request) -> Any:
    return parse_json_body(request.headers.get("Content-Type", ""), await request.read())


def _engine_request(
    request: web.Request, body: CompletionBody | ChatBody, plan: PromptPlan, request_id: str
) -> GenerateRequest:
    return GenerateRequest(
        request_id=request_id,
        prompt_token_ids=plan.token_ids,
        max_tokens=plan.max_tokens,
        min_tokens=plan.min_tokens,
        ignore_eos=body.ignore_eos,
        seed=body.seed,
        cache_salt=body.cache_salt,
        priority=_priority(request, body.priority),
    )


def _usage_options(body: CompletionBody | ChatBody, *, force: bool) -> tuple[bool, bool]:
    """vLLM's ``should_include_usage``: forcing turns on both the final and the running usage."""
    if force:
        return True, True
    options = body.stream_options
    if options is None:
        return False, False
    include = bool(options.include_usage)
    return include, include and bool(options.continuous_usage_stats)


def _base_request_id(request: web.Request, default: str | None) -> str:
    """``X-Request-Id`` if sent, else the body's ``request_id``, else 16 random hex digits."""
    header = request.headers.get("X-Request-Id")
    if header is not None:
        return header
    return default if default is not None else _random_id()


def _priority(request: web.Request, default: int) -> int:
    header = request.headers.get(_PRIORITY_HEADER)
    if header is not None:
        try:
            return int(header)
        except ValueError:
            pass
    return default


def _random_id() -> str:
    return f"{uuid.uuid4().int & (2**64 - 1):016x}"


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Request-Id"] = request.headers.get("X-Request-Id", uuid.uuid4().hex)
