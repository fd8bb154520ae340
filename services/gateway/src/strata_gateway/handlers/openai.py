"""The OpenAI routes: thin handlers over the proxy, the fleet and the OpenAPI document.

POST /v1/chat/completions   POST /v1/completions   (JSON or SSE, via Proxy.generate)
GET  /v1/models             (models with a live engine, filtered by the key's allowance)
GET  /openapi.json
"""

from __future__ import annotations

import time
from typing import Protocol

from aiohttp import web

from strata_gateway.domain.errors import no_engine
from strata_gateway.domain.fleet import Fleet
from strata_gateway.domain.ports import Authenticator
from strata_gateway.domain.requests import Endpoint
from strata_gateway.domain.responses import model_list
from strata_gateway.handlers.openapi import openapi_json
from strata_gateway.handlers.proxy import Proxy

__all__ = ["GatewayState", "add_openai_routes"]


class GatewayState(Protocol):
    """What the handlers need from the running gateway (None until started)."""

    fleet: Fleet

    @property
    def proxy(self) -> Proxy | None:
        """The request path, once the gateway started."""
        ...

    @property
    def authenticator(self) -> Authenticator | None:
        """The authenticator, once the gateway started."""
        ...


class _Handlers:
    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self._openapi = openapi_json()

    def _proxy(self) -> Proxy:
        proxy = self._state.proxy
        if proxy is None:
            raise no_engine("any model", "the gateway is starting")
        return proxy

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy().generate(request, Endpoint.CHAT)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy().generate(request, Endpoint.COMPLETIONS)

    async def models(self, request: web.Request) -> web.Response:
        authenticator = self._state.authenticator
        if authenticator is None:
            raise no_engine("any model", "the gateway is starting")
        principal = await authenticator.authenticate(request.headers.get("Authorization"))
        allowed = principal.allowed_models
        entries = [e for e in self._state.fleet.models(time.time()) if allowed is None or e.model in allowed]
        return web.Response(body=model_list(entries).model_dump_json(), content_type="application/json")

    async def openapi(self, _: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")


def add_openai_routes(app: web.Application, state: GatewayState) -> None:
    """Add the OpenAI routes and /openapi.json to `app` (before it starts)."""
    handlers = _Handlers(state)
    app.router.add_post(Endpoint.CHAT, handlers.chat)
    app.router.add_post(Endpoint.COMPLETIONS, handlers.completions)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_get("/openapi.json", handlers.openapi)
