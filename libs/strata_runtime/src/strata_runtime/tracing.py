"""OpenTelemetry: OTLP/HTTP export when configured, W3C trace context in message headers.

`setup_tracing` installs an SDK tracer provider exporting over OTLP/HTTP only when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable) is set; otherwise
the API's no-op provider stays in place. Hot paths ask :func:`tracing_active` (or use
:func:`start_span`) and skip span bookkeeping altogether when nothing records spans;
they then pass an incoming `traceparent`/`tracestate` through unchanged, so a trace
that started upstream still continues downstream of a service that does not export.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

__all__ = [
    "TRACE_HEADERS",
    "extract_context",
    "inject_headers",
    "install_tracer_provider",
    "passthrough_headers",
    "setup_tracing",
    "start_span",
    "tracer",
    "tracing_active",
]

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_ACTIVE: list[bool] = [False]  # set once a recording provider is installed (OpenTelemetry allows one per process)
TRACE_HEADERS = ("traceparent", "tracestate")
"""The W3C trace-context headers (lower case, as the propagator writes them)."""


def setup_tracing(service: str, instance: str = "") -> bool:
    """Install OTLP export for `service` if an endpoint is configured.

    Returns:
        True when an exporting provider was installed, False for no-op tracing.
    """
    if not any(os.environ.get(var) for var in _ENDPOINT_VARS):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.name": f"strata-{service}"}
    if instance:
        attributes["service.instance.id"] = instance
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install_tracer_provider(provider)
    return True


def install_tracer_provider(provider: trace.TracerProvider) -> None:
    """Make `provider` the process's tracer provider and turn span recording on (tests use it too)."""
    trace.set_tracer_provider(provider)
    _ACTIVE[0] = True


def tracing_active() -> bool:
    """Whether a recording tracer provider was installed (by :func:`setup_tracing` or a test)."""
    return _ACTIVE[0]


def start_span(
    scope: trace.Tracer,
    name: str,
    *,
    context: Context | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
) -> AbstractContextManager[trace.Span]:
    """`scope.start_as_current_span(...)` when tracing is active, else a free no-op span."""
    if tracing_active():
        return scope.start_as_current_span(name, context=context, kind=kind)
    return nullcontext(trace.INVALID_SPAN)


def passthrough_headers(incoming: Mapping[str, str], outgoing: dict[str, str]) -> dict[str, str]:
    """Copy the incoming trace-context headers into `outgoing` (for when tracing is inactive)."""
    for name in TRACE_HEADERS:
        value = incoming.get(name)
        if value is not None:
            outgoing[name] = value
    return outgoing


def tracer(name: str) -> trace.Tracer:
    """The tracer for instrumentation scope `name` (a module name)."""
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str] | None = None, context: Context | None = None) -> dict[str, str]:
    """Add W3C `traceparent`/`tracestate` of the current (or given) context to `headers`."""
    carrier = {} if headers is None else headers
    propagate.inject(carrier, context=context)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> Context:
    """The context carried by `headers` (the current one when they carry none)."""
    if not headers:
        return otel_context.get_current()
    return propagate.extract(dict(headers))
