"""The OpenAI routes: thin handlers over the proxy, the fleet and the OpenAPI document.

POST /v1/chat/completions   POST /v1/completions   (JSON or SSE, via Proxy.generate)
GET  /v1/models             (models with a live engine, filtered by the key's allowance)
GET  /openapi.json
"""

from __future__ import annotations

import time
from typing import Protocol

from strata_gateway.adapters.http_messages import Reply, Request, Response
from strata_gateway.domain.errors import no_engine
from strata_gateway.domain.fleet import Fleet
from strata_gateway.domain.ports import Authenticator
from strata_gateway.domain.requests import Endpoint
from strata_gateway.domain.responses import model_list
from strata_gateway.handlers.http import Routes
from strata_gateway.handlers.openapi import openapi_json
from strata_gateway.handlers.proxy import Proxy

__all__ = ["GatewayState", "openai_routes"]


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

    async def chat(self, request: Request, request_id: str) -> Reply:
        return await self._proxy().generate(request, request_id, Endpoint.CHAT)

    async def completions(self, request: Request, request_id: str) -> Reply:
        return await self._proxy().generate(request, request_id, Endpoint.COMPLETIONS)

    async def models(self, request: Request, _: str) -> Reply:
        authenticator = self._state.authenticator
        if authenticator is None:
            raise no_engine("any model", "the gateway is starting")
        principal = await authenticator.authenticate(request.headers.get("authorization"))
        allowed = principal.allowed_models
        entries = [e for e in self._state.fleet.models(time.time()) if allowed is None or e.model in allowed]
        return Response(200, model_list(entries).model_dump_json().encode())

    async def openapi(self, _: Request, __: str) -> Reply:
        return Response(200, self._openapi)


def openai_routes(state: GatewayState) -> Routes:
    """The OpenAI routes and /openapi.json."""
    handlers = _Handlers(state)
    return {
        Endpoint.CHAT: {"POST": handlers.chat},
        Endpoint.COMPLETIONS: {"POST": handlers.completions},
        "/v1/models": {"GET": handlers.models},
        "/openapi.json": {"GET": handlers.openapi},
    }
