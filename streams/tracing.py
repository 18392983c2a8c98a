"""Traces across processes: W3C trace context in Kafka record headers, OpenTelemetry spans.

A producer (or the gateway) puts ``traceparent`` (and ``tracestate``) in a prompt's record headers;
the router continues that trace with one span per prompt and puts its own context in the headers
of everything it writes for the prompt; the worker does the same, with a child span for the model
call; the feedback service continues it for the label. So one prompt is one trace, whichever
processes it crossed. Spans carry OpenTelemetry's messaging attributes (``messaging.system``,
destination, partition, offset, consumer group) and, on the model call, its GenAI ones
(``gen_ai.request.model``, token usage, finish reason). Never prompt or answer text.

Off unless the standard ``OTEL_*`` variables ask for traces: ``OTEL_TRACES_EXPORTER`` (``otlp``,
``zipkin``, ``console``; ``none``), or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), which means ``otlp``; ``OTEL_SDK_DISABLED=true`` wins.
Off, :data:`TRACER` is None and every helper here returns at once: no header is parsed and no
span is made. The exporters read their own variables (endpoints, ``OTEL_BSP_*`` batching,
``OTEL_TRACES_SAMPLER``); ``OTEL_SERVICE_NAME`` overrides the service's name.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import IprError

log = logging.getLogger(__name__)

TRACER: Any = None  # an opentelemetry Tracer once setup() found tracing asked for
_PROVIDER: Any = None
HEADERS = ("traceparent", "tracestate")
EXPORTERS = ("otlp", "zipkin", "console")


class TracingError(IprError, ValueError):
    """The ``OTEL_*`` variables ask for what cannot be done."""


class TracingSettings(BaseSettings):
    """The standard ``OTEL_*`` variables that say whether this process traces, and how; the
    exporters and the SDK read the rest of theirs themselves (endpoints, headers, ``OTEL_BSP_*``
    batching, ``OTEL_TRACES_SAMPLER``)."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    traces_exporter: str = Field(
        "", description="where spans go: otlp (OTLP over HTTP), zipkin or console; none or unset: "
        "no tracing, unless an OTLP endpoint is set (OTEL_TRACES_EXPORTER)")
    exporter_otlp_endpoint: str | None = Field(
        None, description="the OTLP receiver (e.g. http://collector:4318); set alone, it turns "
        "tracing on with otlp (OTEL_EXPORTER_OTLP_ENDPOINT)")
    exporter_otlp_traces_endpoint: str | None = Field(
        None, description="the OTLP receiver of traces, its full URL; likewise "
        "(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)")
    sdk_disabled: bool = Field(False, description="true: no tracing whatever else is set "
                               "(OTEL_SDK_DISABLED)")
    service_name: str | None = Field(
        None, description="the service's name on its spans; default ipr-router, ipr-worker, "
        "ipr-feedback or ipr-gateway (OTEL_SERVICE_NAME)")

    def exporter(self) -> str | None:
        """The exporter asked for, or None (tracing off)."""
        if self.sdk_disabled:
            return None
        names = [n.strip().lower() for n in self.traces_exporter.split(",") if n.strip()]
        if not names and (self.exporter_otlp_endpoint or self.exporter_otlp_traces_endpoint):
            names = ["otlp"]
        if not names or names == ["none"]:
            return None
        if names[0] not in EXPORTERS:
            raise TracingError(f"OTEL_TRACES_EXPORTER={names[0]!r}: expected one of "
                               f"{', '.join(EXPORTERS)} or none")
        return names[0]


def setup(service: str, exporter: Any = None) -> bool:
    """Start tracing for this process as ``service`` when asked (``OTEL_*``), or with
    ``exporter`` (a SpanExporter, for tests); whether it is on. Spans are exported in batches
    from a thread of the SDK's, and flushed when the process exits."""
    global TRACER, _PROVIDER
    settings = TracingSettings()
    kind = "given" if exporter is not None else settings.exporter()
    if kind is None:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        exporter = _exporter(kind)
    name = settings.service_name or service
    _PROVIDER = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    _PROVIDER.add_span_processor(BatchSpanProcessor(exporter))
    TRACER = _PROVIDER.get_tracer("ipr-router")
    log.warning("tracing on: %s spans as service %s", kind, name)
    return True


def shutdown() -> None:
    """Flush what is batched and stop tracing (the SDK also flushes at exit)."""
    global TRACER, _PROVIDER
    if _PROVIDER is not None:
        _PROVIDER.shutdown()
    TRACER = _PROVIDER = None


def _exporter(kind: str):
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if kind == "zipkin":
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        return ZipkinExporter()
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter()


# -- context in and out of record headers ---------------------------------------------------

def parent(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None):
    """The trace context a record's headers carry (None: none, or tracing off)."""
    if TRACER is None or not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    carrier = {k: v.decode("latin-1") for k, v in items
               if k in HEADERS and isinstance(v, bytes | bytearray)}
    if not carrier:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier)


def headers_of(span) -> list[tuple[str, bytes]] | None:
    """Record headers that continue ``span``'s trace (None: no span)."""
    if span is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    return [(k, v.encode("latin-1")) for k, v in carrier.items()]


def http_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the active span, for an outgoing HTTP call ({}:
    tracing off, or no span active)."""
    if TRACER is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


def record_headers() -> list[tuple[str, bytes]] | None:
    """Record headers that continue the active span's trace (None: tracing off, or none)."""
    carrier = http_headers()
    return [(k, v.encode("latin-1")) for k, v in carrier.items()] or None


def active(span):
    """A context manager in which ``span`` is the active span (none: nothing changes)."""
    if span is None:
        return contextlib.nullcontext()
    from opentelemetry import trace

    return trace.use_span(span, end_on_exit=False, record_exception=False,
                          set_status_on_exception=False)


def consumed(topic: str, partition: int, offset: int, group: str, key: bytes | str | None,
             headers=None, start_ns: int | None = None, attributes: Mapping | None = None):
    """A started consumer span for processing one record (``process <topic>``), a child of the
    context in its headers; None when tracing is off. The caller ends it."""
    if TRACER is None:
        return None
    from opentelemetry.trace import SpanKind

    attrs = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.consumer.group.name": group,
    }
    if key is not None:  # a prompt id, never text
        attrs["messaging.kafka.message.key"] = (key.decode("utf-8", "replace")
                                                if isinstance(key, bytes) else key)
    attrs.update(_present(attributes))
    return TRACER.start_span(f"process {topic}", context=parent(headers), kind=SpanKind.CONSUMER,
                             attributes=attrs, start_time=start_ns)


def child(span, name: str, kind: str = "INTERNAL", attributes: Mapping | None = None):
    """A started span under ``span`` (None when ``span`` is None); the caller ends it."""
    if span is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    return TRACER.start_span(name, context=trace.set_span_in_context(span),
                             kind=getattr(SpanKind, kind),
                             attributes=_present(attributes))


def span(name: str, attributes: Mapping | None = None):
    """A context manager: an internal span under the active one, active inside it (nothing when
    tracing is off)."""
    if TRACER is None:
        return contextlib.nullcontext()
    return TRACER.start_as_current_span(name, attributes=_present(attributes))


def received(headers: Mapping[str, str], method: str, route: str):
    """A started server span for an HTTP request (``POST /v1/chat/completions``), a child of the
    ``traceparent`` it carries; None when tracing is off. The caller ends it."""
    if TRACER is None:
        return None
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {k: headers[k] for k in HEADERS if k in headers}
    context = TraceContextTextMapPropagator().extract(carrier) if carrier else None
    return TRACER.start_span(f"{method} {route}", context=context, kind=SpanKind.SERVER,
                             attributes={"http.request.method": method, "http.route": route})


def responded(span, status: int) -> None:
    if span is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            failed(span, str(status))


def annotate(attributes: Mapping) -> None:
    """Attributes on the active span (nothing when tracing is off)."""
    if TRACER is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(_present(attributes))


def failed(span, kind: str, description: str | None = None) -> None:
    """Mark ``span`` failed with an error kind (``error.type``); no text of the prompt's."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, description))


def _present(attributes: Mapping | None) -> dict:
    return {k: v for k, v in (attributes or {}).items() if v is not None}
