"""Choosing the engine of one attempt: the router's decision, else a local pick.

    candidates = routable engines of the model, minus the ones this request already tried
    none ──▶ 503
    router answers in time with a routable engine ──▶ use it
    router: no engine fits ──▶ 503 with its reason
    otherwise (timeout, no router, bad reply, unroutable engine, router disabled)
        ──▶ local picker of the strategy (least-request when the gateway has none of that
            name), `strata_gateway_route_fallback_total{reason}` + a log line (at most one
            per reason every 10 s)

The router is asked even when one engine is left, so its state (prefix index, fairness
counters) sees every request.
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

from strata_contracts.messages import RouteDecision, RoutePick
from strata_gateway.adapters.router_client import RouterClient, RouterUnavailable
from strata_gateway.domain.errors import no_engine
from strata_gateway.domain.fleet import EngineView, Fleet
from strata_gateway.domain.picking import Picker, local_picker
from strata_gateway.domain.requests import ParsedRequest
from strata_gateway.telemetry import ROUTE_SECONDS, TRACER, route_fallbacks
from strata_runtime.tracing import start_span

__all__ = ["Route", "Routing"]

_log = logging.getLogger(__name__)
_LOG_EVERY_S = 10.0
_ROUTER_SECONDS = ROUTE_SECONDS.labels("router")
_FALLBACK_SECONDS = ROUTE_SECONDS.labels("fallback")


class Route(NamedTuple):
    """Where one attempt goes.

    Attributes:
        engine_id: chosen engine.
        url: its base URL.
        strategy: the strategy that made the choice (the router's, or the local picker's).
        decision_id: the router's decision id; None for a local pick.
        fallback: why the pick was local; None when the router chose.
    """

    engine_id: str
    url: str
    strategy: str
    decision_id: str | None = None
    fallback: str | None = None


class Routing:
    """Routes attempts for one gateway process.

    Args:
        fleet: the engine snapshot.
        router: the router client; None when the router is disabled.
        pickers: local pickers by strategy name (must include least-request).
        route_timeout_ms: the router's deadline, sent along in each pick.
    """

    def __init__(self, fleet: Fleet, router: RouterClient | None, pickers: dict[str, Picker], route_timeout_ms: int):
        self._fleet = fleet
        self._router = router
        self._pickers = pickers
        self._deadline_ms = route_timeout_ms
        self._logged: dict[str, float] = {}

    async def choose(
        self,
        request: ParsedRequest,
        *,
        request_id: str,
        strategy: str,
        tenant_id: str,
        session_id: str | None,
        exclude: frozenset[str],
    ) -> Route:
        """The engine for the next attempt of a request.

        Raises:
            GatewayError: 503 when no engine can take it.
        """
        started = time.perf_counter()
        candidates = self._fleet.routable(request.model, now=time.time(), mono=time.monotonic(), exclude=exclude)
        if not candidates:
            raise no_engine(request.model, "every engine failed or is unhealthy" if exclude else "")
        with start_span(TRACER, "gateway.route") as span:
            span.set_attribute("strata.strategy", strategy)
            reason = "disabled" if self._router is None else self._router.quiet_reason
            if self._router is not None and reason is None:
                pick = RoutePick(
                    request_id=request_id,
                    model=request.model,
                    strategy=strategy,
                    tenant_id=tenant_id,
                    session_id=session_id,
                    prompt_text=request.prompt_text,
                    prompt_token_ids=request.prompt_token_ids,
                    prompt_chars=request.prompt_chars,
                    max_tokens=request.max_tokens,
                    exclude=sorted(exclude),
                    deadline_ms=self._deadline_ms,
                )
                try:
                    decision = await self._router.pick(pick)
                except RouterUnavailable as exc:
                    reason = exc.reason
                else:
                    route = self._accept(decision, candidates, exclude, request.model)
                    if route is not None:
                        _ROUTER_SECONDS.observe(time.perf_counter() - started)
                        span.set_attribute("strata.engine", route.engine_id)
                        return route
                    reason = "unroutable_engine"
            reason = reason or "unknown"
            picker = local_picker(strategy, self._pickers)
            chosen = picker.pick(candidates)
            route_fallbacks(reason).inc()
            _FALLBACK_SECONDS.observe(time.perf_counter() - started)
            self._log_fallback(reason, strategy, picker.name)
            span.set_attribute("strata.engine", chosen.engine_id)
            span.set_attribute("strata.route_fallback", reason)
            return Route(chosen.engine_id, chosen.url, picker.name, None, reason)

    def _accept(
        self, decision: RouteDecision, candidates: list[EngineView], exclude: frozenset[str], model: str
    ) -> Route | None:
        """The route of a router decision, or None when the gateway cannot use it."""
        if decision.engine_id is None:
            raise no_engine(model, decision.error or "the router found no engine")
        if decision.engine_id in exclude:
            return None
        url = next((c.url for c in candidates if c.engine_id == decision.engine_id), None)
        if url is None and decision.url is not None and self._fleet.url_of(decision.engine_id) is None:
            url = decision.url.rstrip("/")  # an engine the router knows before this gateway does
        if url is None:
            return None
        return Route(decision.engine_id, url, decision.strategy, decision.decision_id, None)

    def _log_fallback(self, reason: str, strategy: str, picker: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(reason, -_LOG_EVERY_S) < _LOG_EVERY_S:
            return
        self._logged[reason] = now
        level = logging.INFO if reason in ("disabled", "no_responders") else logging.WARNING
        _log.log(level, "local %s pick for strategy %s (router: %s)", picker, strategy, reason)
