"""OpenTelemetry: OTLP/HTTP export when configured, W3C trace context in message headers.

`setup_tracing` installs an SDK tracer provider exporting over OTLP/HTTP only when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable) is set; otherwise
the API's no-op provider stays in place and spans cost next to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

__all__ = ["extract_context", "inject_headers", "setup_tracing", "tracer"]

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


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
    trace.set_tracer_provider(provider)
    return True


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
