"""streams.tracing: when the OTEL_* variables turn tracing on, that off it makes no span and
parses no header, and that a record's traceparent is continued and carried on."""

from __future__ import annotations

import asyncio
import http.server
import os
import subprocess
import sys
import threading

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas import RoutedPrompt
from streams import tracing
from streams.worker import traces
from streams.worker.backends.base import Completion
from streams.worker.backends.openai import OpenAIBackend

TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
HEADERS = [("traceparent", f"00-{TRACE}-{PARENT}-01".encode()), ("other", b"x")]


OTEL = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME")


@pytest.fixture(autouse=True)
def no_otel(monkeypatch):
    for k in OTEL:
        monkeypatch.delenv(k, raising=False)


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "zipkin"),
    ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
    ({"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_SDK_DISABLED": "true"}, None),
])
def test_the_otel_variables_say_whether_and_where(env, expected, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert tracing.TracingSettings().exporter() == expected


def test_an_unknown_exporter_is_an_error_naming_the_choices(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(tracing.TracingError, match="expected one of otlp, zipkin, console"):
        tracing.setup("ipr-router")


def test_off_it_makes_no_span_and_no_header():
    assert tracing.setup("ipr-router") is False
    assert tracing.TRACER is None
    assert tracing.parent(HEADERS) is None
    assert tracing.consumed("t", 0, 1, "g", b"k", HEADERS) is None
    assert tracing.headers_of(None) is None
    assert tracing.record_headers() is None and tracing.http_headers() == {}


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    assert tracing.setup("ipr-test", exporter=exporter)
    yield exporter
    tracing.shutdown()


def test_a_record_s_trace_is_continued_and_carried_on(spans):
    span = tracing.consumed("prompts.in", 3, 42, "router", b"p-1", HEADERS,
                            attributes={"ipr.model": "m", "ipr.tenant": None})
    out = dict(tracing.headers_of(span))
    span.end()
    tracing.shutdown()
    (done,) = spans.get_finished_spans()
    assert format(done.context.trace_id, "032x") == TRACE
    assert format(done.parent.span_id, "016x") == PARENT
    assert done.name == "process prompts.in" and done.kind.name == "CONSUMER"
    assert done.attributes["messaging.destination.partition.id"] == "3"
    assert done.attributes["messaging.kafka.offset"] == 42
    assert done.attributes["messaging.kafka.message.key"] == "p-1"
    assert done.attributes["ipr.model"] == "m" and "ipr.tenant" not in done.attributes
    assert out["traceparent"].decode() == f"00-{TRACE}-{done.context.span_id:016x}-01"


def test_without_a_traceparent_a_trace_begins(spans):
    span = tracing.consumed("prompts.in", 0, 0, "router", None, [("other", b"x")])
    span.end()
    tracing.shutdown()
    (done,) = spans.get_finished_spans()
    assert done.parent is None and format(done.context.trace_id, "032x") != TRACE


def test_the_model_call_span_has_the_genai_attributes_and_no_text(spans):
    routed = RoutedPrompt.model_validate({
        "prompt_id": "p-1", "text": "a secret question", "model_id": "m-small",
        "tolerance": 0.1, "threshold": 0.7, "predicted_quality": {"m-small": 0.8},
        "estimated_cost_usd": {"m-small": 0.001}, "router_version": "v1",
        "routing_latency_ms": 3.0, "routed_at": 1.0, "params": {"max_tokens": 64,
                                                                "temperature": 0.2}})
    record = tracing.consumed("prompts.routed.m-small", 0, 7, "worker", b"p-1", HEADERS)
    with tracing.active(call := traces.call_span(record, routed, "openai")):
        assert tracing.http_headers()["traceparent"].split("-")[2] == \
            format(call.get_span_context().span_id, "016x")  # what an HTTP backend sends on
    traces.call_ended(call, Completion("a secret answer", 12, 5, 0.002, 40.0,
                                       finish_reason="stop", response_model="m-small-2025"))
    record.end()
    tracing.shutdown()
    done = {s.kind.name: s for s in spans.get_finished_spans()}
    a = done["CLIENT"].attributes
    assert done["CLIENT"].parent.span_id == done["CONSUMER"].context.span_id
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("m-small", "m-small-2025")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 5)
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert (a["gen_ai.request.max_tokens"], a["gen_ai.request.temperature"]) == (64, 0.2)
    assert "secret" not in repr(dict(a))


def test_a_failed_call_is_an_error_span(spans):
    routed_span = tracing.consumed("t", 0, 0, "g", None, HEADERS)
    call = tracing.child(routed_span, "chat m", "CLIENT")
    traces.call_ended(call, Completion("", 3, 0, 0.0, 5.0, error="HTTP 429",
                                       error_status=429, error_type="rate_limit"))
    routed_span.end()
    tracing.shutdown()
    failed = next(s for s in spans.get_finished_spans() if s.name == "chat m")
    assert failed.status.status_code.name == "ERROR"
    assert failed.attributes["error.type"] == "rate_limit"
    assert failed.attributes["http.response.status_code"] == 429


def test_off_the_services_load_nothing_of_opentelemetry():
    code = ("import sys, streams.router.agent, streams.worker.model_loop, streams.feedback.app; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={k: v for k, v in os.environ.items()
                                           if not k.startswith("OTEL_")})
    assert done.stdout.strip() == "[]"


def test_the_gateway_continues_the_http_request_s_trace_onto_the_record(spans):
    span = tracing.received({"traceparent": f"00-{TRACE}-{PARENT}-01"}, "POST",
                            "/v1/chat/completions")
    with tracing.active(span):
        (header,) = tracing.record_headers()  # what ReplyChannel.submit puts on prompts.in
        tracing.annotate({"gen_ai.response.model": "m-small", "gen_ai.usage.input_tokens": None})
    tracing.responded(span, 200)
    span.end()
    tracing.shutdown()
    (done,) = spans.get_finished_spans()
    assert done.kind.name == "SERVER" and done.name == "POST /v1/chat/completions"
    assert format(done.parent.span_id, "016x") == PARENT
    assert header == ("traceparent", f"00-{TRACE}-{done.context.span_id:016x}-01".encode())
    assert done.attributes["gen_ai.response.model"] == "m-small"
    assert done.attributes["http.response.status_code"] == 200
    assert "gen_ai.usage.input_tokens" not in done.attributes


class _OtlpReceiver(http.server.BaseHTTPRequestHandler):
    """OTLP over HTTP, the protobuf body decoded with OpenTelemetry's own messages."""

    got: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.got.append((self.path, request))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_args):
        pass


def test_an_otlp_endpoint_alone_exports_otlp_over_http(monkeypatch):
    server = http.server.HTTPServer(("127.0.0.1", 0), _OtlpReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        assert tracing.setup("ipr-worker")
        tracing.consumed("prompts.routed.m", 0, 5, "worker", b"p-1", HEADERS).end()
        tracing.shutdown()  # flushes
    finally:
        server.shutdown()
    ((path, request),) = _OtlpReceiver.got
    assert path == "/v1/traces"
    resource = request.resource_spans[0]
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "ipr-worker"
    (span,) = resource.scope_spans[0].spans
    assert span.name == "process prompts.routed.m" and span.trace_id.hex() == TRACE


def test_the_openai_backend_sends_the_call_s_traceparent_to_the_server(spans):
    from aiohttp import web

    from tests.unit.streams.worker.test_backends import FAST, ChatServer, routed

    async def handler(body: dict, n: int) -> web.Response:
        return web.json_response({"model": "served-2025", "choices": [
            {"message": {"content": "4"}, "finish_reason": "stop"}]})

    async def main():
        async with ChatServer(handler) as server:
            backend = OpenAIBackend(server.base_url, **FAST)
            record = tracing.consumed("prompts.routed.m", 0, 1, "worker", b"p", HEADERS)
            call = tracing.child(record, "chat m", "CLIENT")
            with tracing.active(call):
                c = await backend.complete(routed("p", "m", text="2+2?"))
            await backend.aclose()
            return c, server, call

    c, server, call = asyncio.run(main())
    sent = server.headers[0]["traceparent"]
    assert sent == f"00-{TRACE}-{call.get_span_context().span_id:016x}-01"
    assert c.response_model == "served-2025"
