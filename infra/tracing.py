"""OpenTelemetry tracing, off unless ``CHRONIK_TRACING`` turns it on.

Off (the default), no provider is installed: every ``trace.get_tracer`` in
the code base returns the API's no-op tracer, no span is recorded, nothing is
exported, and the stages below skip the work they would do only for a trace
(reading stored trace context, extra queries). On, each process installs one
SDK provider named for its role (``chronik-api``, ``chronik-worker``) that
batches spans to an OTLP/HTTP collector or to stdout.

One trace follows a command: the API's server span, the command, the event
store append (its W3C ``traceparent`` is stored in each event's metadata),
each projection that applies the events, the relay's publish (the
``traceparent`` and the correlation id travel in NATS headers), the webhook
consumer, and the delivery's outbound POST. See docs/operations.md, "Tracing".
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, MutableMapping
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from infra.settings import Settings

__all__ = [
    "CORRELATION_HEADER",
    "TRACEPARENT",
    "build_provider",
    "context_of",
    "enabled",
    "inject",
    "setup_tracing",
    "shutdown_tracing",
    "traceparent_of",
    "tracer",
]

TRACER_NAME: Final = "chronik"
# The W3C header (and metadata field) that carries a span's context.
TRACEPARENT: Final = "traceparent"
# Beside the traceparent on every NATS message: consumers log and trace it.
CORRELATION_HEADER: Final = "Chronik-Correlation-Id"
# OTLP/HTTP's path for traces under the collector's base URL (as the
# OTEL_EXPORTER_OTLP_ENDPOINT convention has it).
TRACES_PATH: Final = "/v1/traces"

# Only W3C trace context: baggage would carry whatever a client sent into our
# stored events and NATS headers.
_W3C: Final = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: TracerProvider | None = None


def setup_tracing(settings: Settings, *, role: str) -> bool:
    """Installs this process's provider if ``settings`` turn tracing on;
    whether tracing is on. The API allows one global provider per process: the
    first role to set up names it (``chronik dev`` runs API and worker in one)."""
    global _provider  # noqa: PLW0603 - the process has one provider
    if settings.tracing == "off":
        return _provider is not None
    with _lock:
        if _provider is None:
            provider = build_provider(settings, role=role)
            trace.set_tracer_provider(provider)
            _provider = provider
    return True


def build_provider(
    settings: Settings, *, role: str, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A provider for ``role`` that exports in batches (off the request path)."""
    resource = Resource.create(
        {SERVICE_NAME: f"{settings.tracing_service_name}-{role}", "chronik.role": role}
    )
    # A trace that arrives with a decision (a client's traceparent, a stored
    # one) keeps it, so a trace is never recorded in some stages only.
    sampler = ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(exporter or _exporter(settings)))
    return provider


def _exporter(settings: Settings) -> SpanExporter:
    if settings.tracing == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + TRACES_PATH)


# How long a stopping process waits for its last spans to be exported.
FLUSH_TIMEOUT_MS: Final = 5000


def shutdown_tracing() -> None:
    """Exports what is still queued, as a process stops. The provider stays
    installed (the SDK shuts it down at exit): in ``chronik dev`` and in tests
    one process builds several apps and workers."""
    with _lock:
        provider = _provider
    if provider is not None:
        provider.force_flush(timeout_millis=FLUSH_TIMEOUT_MS)


def enabled() -> bool:
    """Whether this process records spans: the stages skip trace-only work when not."""
    return _provider is not None


def tracer() -> Tracer:
    return trace.get_tracer(TRACER_NAME)


def traceparent_of(span: Span | None = None) -> str | None:
    """The W3C traceparent of ``span`` (default: the current one); None when
    there is no valid span, e.g. with tracing off."""
    context = trace.set_span_in_context(span) if span is not None else None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    return carrier.get(TRACEPARENT)


def context_of(carrier: Mapping[str, str] | str | None) -> Context | None:
    """The context a stored traceparent (or a headers mapping holding one)
    continues; None when there is none or it is malformed."""
    if carrier is None:
        return None
    headers = {TRACEPARENT: carrier} if isinstance(carrier, str) else carrier
    # Header names differ in case between NATS, HTTP/1 and our own dicts.
    value = next((v for k, v in headers.items() if k.lower() == TRACEPARENT), None)
    if not value:
        return None
    context = _W3C.extract({TRACEPARENT: value})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def inject(headers: MutableMapping[str, str], span: Span | None = None) -> None:
    """Adds the traceparent of ``span`` (default: the current one) to ``headers``."""
    value = traceparent_of(span)
    if value is not None:
        headers[TRACEPARENT] = value
