"""One generation request, end to end.

    authenticate (401) ─▶ read body (413) ─▶ parse (400) ─▶ strategy (400) ─▶ model (404/403)
    ─▶ admit (429) ─▶ [route ─▶ POST to the engine ─▶ relay] ─▶ settle + release
    ─▶ Accounting: exactly one usage record (UsageSink.record_many, batched)
                   ─▶ RouteOutcome on strata.route.v1.outcome

Failover: a connect error, a 5xx, or a dropped connection before the client saw a byte
sends the request to another engine (the failed ones excluded), at most `max_retries`
times and only within the process's retry budget. A connect failure also ejects the
engine from local picks for `eject_s`. Timeouts are not retried (504).

Everything after admission is accounted for whatever happens: a failure, a client that
went away (499, upstream closed: the server cancels the handler when the connection
drops, or a write to it fails), or a bug (500). The admission is settled and released as
the handler ends; the usage record and the outcome go to :class:`Accounting`, which sends
them in batches after the response, so a JetStream acknowledgement never delays the
client; shutdown flushes it after the in-flight requests drained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from opentelemetry.trace import SpanKind

from strata_gateway.adapters.http_messages import Reply, Request
from strata_gateway.adapters.upstream import UpstreamClient, UpstreamFailure
from strata_gateway.domain.errors import model_not_allowed, model_not_found, normalize_upstream_error
from strata_gateway.domain.exchange import Exchange
from strata_gateway.domain.fleet import Fleet
from strata_gateway.domain.ports import Admission, Authenticator, GatewayError, Limiter, UsageSink
from strata_gateway.domain.requests import Endpoint, choose_strategy, parse_request
from strata_gateway.domain.retry import RetryBudget
from strata_gateway.handlers import http
from strata_gateway.handlers.accounting import Accounting, PublishOutcomes
from strata_gateway.handlers.relay import ClientGone, relay_body, relay_stream
from strata_gateway.handlers.routing import Route, Routing
from strata_gateway.settings import GatewaySettings
from strata_gateway.telemetry import (
    RETRIES,
    TRACER,
    UPSTREAM_ERRORS,
    request_seconds,
    requests_total,
    ttft_seconds,
)
from strata_runtime.shutdown import InFlight
from strata_runtime.tracing import extract_context, inject_headers, passthrough_headers, start_span, tracing_active

__all__ = ["Ports", "Proxy"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ports:
    """The tenant, limit and usage machinery the request path talks to."""

    authenticator: Authenticator
    limiter: Limiter
    usage_sink: UsageSink


class Proxy:
    """Serves generation requests for one gateway process (built by the app once started).

    Args:
        settings: gateway settings.
        ports: authenticator, limiter, usage sink.
        fleet: the engine snapshot (in-flight counts and ejections are kept here).
        routing: chooses each attempt's engine.
        upstream: HTTP client to the engines.
        publish_outcomes: fire-and-forget publisher of encoded RouteOutcomes.
        inflight: the service's in-flight counter (drained on shutdown).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        ports: Ports,
        *,
        fleet: Fleet,
        routing: Routing,
        upstream: UpstreamClient,
        publish_outcomes: PublishOutcomes,
        inflight: InFlight,
    ) -> None:
        self._settings = settings
        self._ports = ports
        self._fleet = fleet
        self._routing = routing
        self._upstream = upstream
        self._inflight = inflight
        self._budget = RetryBudget(settings.retry_budget_percent, settings.retry_min_concurrency)
        self._accounting = Accounting(ports.usage_sink, publish_outcomes)

    async def close(self) -> None:
        """At shutdown, after draining: sends the queued usage records and outcomes."""
        await self._accounting.close()

    async def generate(self, request: Request, request_id: str, endpoint: Endpoint) -> Reply:
        """Serve one chat or completions request (errors are raised as GatewayError)."""
        exchange = Exchange(request_id=request_id, endpoint=endpoint, client_request_id=http.client_request_id(request))
        admission = None
        traced = tracing_active()
        parent = extract_context(request.headers) if traced else None
        with (
            self._inflight.track(),
            start_span(TRACER, f"POST {endpoint}", context=parent, kind=SpanKind.SERVER) as span,
        ):
            span.set_attribute("strata.request_id", exchange.request_id)
            if traced:  # what is sent about this request (usage, outcome) joins the server span
                inject_headers(exchange.trace_headers)
            else:  # no span of ours to carry: hand the client's trace context on as it came
                passthrough_headers(request.headers, exchange.trace_headers)
            try:
                principal = await self._ports.authenticator.authenticate(request.headers.get("authorization"))
                exchange.principal = principal
                parsed = parse_request(endpoint, await http.read_body(request))
                exchange.request = parsed
                exchange.strategy = choose_strategy(
                    request.headers.get(http.STRATEGY_HEADER),
                    principal.default_strategy,
                    self._settings.default_strategy,
                    self._settings.strategies,
                )
                if not self._fleet.knows_model(parsed.model):
                    raise model_not_found(parsed.model)
                if principal.allowed_models is not None and parsed.model not in principal.allowed_models:
                    raise model_not_allowed(parsed.model)
                admission = await self._ports.limiter.admit(principal)
                return await self._serve(request, exchange)
            except ClientGone as gone:
                exchange.fail(asyncio.CancelledError())
                return gone.response  # unfinished: the server drops the connection
            except BaseException as exc:
                exchange.fail(exc)
                raise
            finally:
                exchange.end()
                span.set_attribute("http.response.status_code", exchange.status)
                if admission is not None:
                    self._account(exchange, admission)
                self._observe(exchange)

    async def _serve(self, request: Request, exchange: Exchange) -> Reply:
        """Route and send, failing over before the first byte."""
        assert exchange.request is not None
        assert exchange.principal is not None
        deadline = asyncio.get_running_loop().time() + self._settings.request_timeout_s
        tried: set[str] = set()
        last: UpstreamFailure | None = None
        retries_held = 0
        try:
            while True:
                try:
                    route = await self._routing.choose(
                        exchange.request,
                        request_id=exchange.request_id,
                        strategy=exchange.strategy or self._settings.default_strategy,
                        tenant_id=exchange.principal.tenant_id,
                        session_id=request.headers.get(http.SESSION_HEADER),
                        exclude=frozenset(tried),
                    )
                except GatewayError:
                    if last is not None:  # every engine left has failed: report the failure itself
                        raise last.to_error() from None
                    raise
                exchange.engine_id, exchange.route_strategy, exchange.decision_id = (
                    route.engine_id,
                    route.strategy,
                    route.decision_id,
                )
                try:
                    return await self._attempt(request, exchange, route, deadline)
                except UpstreamFailure as failure:
                    last = failure
                    self._on_failure(failure)
                    if not self._may_retry(failure, exchange):
                        raise failure.to_error() from None
                    retries_held += 1
                    exchange.retries += 1
                    tried.add(route.engine_id)
                    RETRIES.labels(failure.kind).inc()
                    _log.warning(
                        "retrying on another engine: %s",
                        failure,
                        extra={
                            "request_id": exchange.request_id,
                            "client_request_id": exchange.client_request_id,
                            "attempt": exchange.retries + 1,
                        },
                    )
        finally:
            for _ in range(retries_held):
                self._budget.release()

    async def _attempt(self, request: Request, exchange: Exchange, route: Route, deadline: float) -> Reply:
        """One attempt at one engine."""
        assert exchange.request is not None
        parsed = exchange.request
        headers = _response_headers(exchange, route)
        self._fleet.acquire(route.engine_id)
        try:
            with start_span(TRACER, "gateway.upstream", kind=SpanKind.CLIENT) as span:
                span.set_attribute("strata.engine", route.engine_id)
                outgoing = {"Content-Type": "application/json", "X-Request-Id": exchange.request_id}
                if tracing_active():
                    inject_headers(outgoing)  # the upstream span's context
                else:
                    outgoing.update(exchange.trace_headers)
                upstream = await self._upstream.post(
                    route.engine_id, route.url + parsed.endpoint, parsed.upstream_body, outgoing, deadline
                )
                span.set_attribute("http.response.status_code", upstream.status)
                content_type = upstream.headers.get("Content-Type", "")
                if parsed.stream and upstream.status == 200 and content_type.startswith("text/event-stream"):
                    return await relay_stream(
                        request, exchange, route.engine_id, upstream, headers=headers, deadline=deadline
                    )
                body = await self._upstream.read(route.engine_id, upstream, deadline)
                if upstream.status >= 400:
                    exchange.error = f"engine_{upstream.status}"
                    body = normalize_upstream_error(upstream.status, body)
                    return relay_body(exchange, upstream.status, body, "application/json", headers)
                return relay_body(exchange, upstream.status, body, upstream.content_type, headers)
        finally:
            self._fleet.release(route.engine_id)

    def _on_failure(self, failure: UpstreamFailure) -> None:
        UPSTREAM_ERRORS.labels(failure.engine_id, failure.kind).inc()
        if failure.kind == "connect" and self._settings.eject_s > 0:
            self._fleet.eject(failure.engine_id, time.monotonic() + self._settings.eject_s)

    def _may_retry(self, failure: UpstreamFailure, exchange: Exchange) -> bool:
        return (
            failure.retryable
            and exchange.retries < self._settings.max_retries
            and self._budget.try_acquire(self._inflight.count)
        )

    def _account(self, exchange: Exchange, admission: Admission) -> None:
        """Settle and release the admission now; queue the usage record and outcome (sent in batches).

        A failing limiter is logged: it must cost neither the response nor the usage record.
        """
        try:
            try:
                admission.settle(exchange.usage.prompt_tokens, exchange.usage.completion_tokens)
            finally:
                admission.release()
        except Exception:  # noqa: BLE001 - see above
            _log.exception("settling the admission failed", extra={"request_id": exchange.request_id})
        self._accounting.submit(exchange)

    def _observe(self, exchange: Exchange) -> None:
        strategy = exchange.strategy_label
        requests_total(exchange.endpoint, exchange.status, strategy).inc()
        if exchange.engine_id is not None:
            request_seconds(exchange.endpoint, strategy).observe(exchange.elapsed())
            if exchange.first_byte_s is not None:
                ttft_seconds(exchange.endpoint, strategy).observe(exchange.first_byte_s)


def _response_headers(exchange: Exchange, route: Route) -> dict[str, str]:
    headers = {
        http.REQUEST_ID_HEADER: exchange.echoed_id,
        http.ENGINE_HEADER: route.engine_id,
        http.STRATEGY_OUT_HEADER: route.strategy,
    }
    if route.fallback is not None:
        headers[http.FALLBACK_HEADER] = route.fallback
    return headers
