"""The gateway's HTTP API, OpenAI-compatible: ``POST /v1/chat/completions``, ``GET /v1/models``,
``POST /v1/feedback``, ``GET /health`` and ``GET /metrics``.

FastAPI on uvicorn, the stack of the OpenAI-compatible servers of vLLM, RouteLLM and LiteLLM, so
the official SDKs and their clients work unchanged. A request becomes a PromptRequest on
``prompts.in`` (``streams.gateway.requests``) whose ``reply_to`` is this gateway's reply topic;
its ModelResponse comes back there (``streams.gateway.channel``) and is answered in the
``chat.completion`` format (``streams.gateway.responses``). Every error is OpenAI's error body
(``streams.gateway.errors``); whatever a client sends, the answer is an HTTP status, never a
stopped gateway. Prompt text and keys are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas import ModelResponse, PromptRequest, QualityFeedback, StreamChunk, encode
from schemas.fields import Label, Probability, PromptId
from streams import tracing
from streams.gateway.channel import Pending, ReplyChannel
from streams.gateway.errors import ApiError, timeout_error
from streams.gateway.keys import tenant_of
from streams.gateway.metrics import GatewayMetrics
from streams.gateway.requests import (
    idempotent_prompt_id,
    parse_model,
    parse_tolerance,
    to_prompt_request,
)
from streams.gateway.responses import chat_completion, ipr_headers, model_list
from streams.gateway.settings import GatewaySettings
from streams.gateway.streaming import Stream, outcome_error

log = logging.getLogger(__name__)


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt_id: PromptId
    quality: Probability
    source: Label = "user"


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: 413 above ``limit`` bytes, 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {declared} bytes; the limit is {limit}",
                       code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes, the limit",
                           code="body_too_large")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"the body is not valid JSON ({str(e).split(':')[0]}): expected a "
                       "chat-completions request object", code="invalid_json") from None


def create_app(settings: GatewaySettings, models: list[str],
               keys: dict[str, str] | None = None,
               on_ready: Any = None) -> FastAPI:
    """The app; its lifespan starts the reply channel (``/health`` is 200 once it is ready)
    and stops it, deleting the reply topic. ``keys``: tenants by key hash (None: no keys)."""
    channel = ReplyChannel(settings)
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await channel.start()
        if on_ready is not None:
            on_ready(channel)
        try:
            yield
        finally:
            await channel.stop()

    app = FastAPI(title="ipr gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.channel, app.state.metrics = channel, metrics
    _handlers(app, metrics)

    @app.get("/health")
    async def health() -> JSONResponse:
        if not channel.ready.is_set():
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready", "instance": settings.instance_id})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        tenant_of(request.headers.get("authorization"), keys)
        return JSONResponse(model_list(settings.alias, models, int(time.time())))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        tenant = tenant_of(request.headers.get("authorization"), keys)
        body = await read_json(request, settings.max_body_bytes)
        return await _complete(request, body, tenant, channel, settings, models, metrics)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> JSONResponse:
        tenant = tenant_of(request.headers.get("authorization"), keys)
        try:
            fb = FeedbackBody.model_validate(await read_json(request, 65_536))
        except ValidationError as e:
            first = e.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            raise ApiError(400, f"{param or 'body'}: {first['msg']} (expected prompt_id, "
                           "quality in [0, 1], source)", param=param) from None
        known = channel.known(fb.prompt_id)
        if known is None or known.model_id is None or known.tenant != tenant:
            raise ApiError(404, f"prompt {fb.prompt_id} was not answered by this gateway "
                           f"(or is no longer remembered)", param="prompt_id",
                           code="prompt_not_found")
        label = QualityFeedback(prompt_id=fb.prompt_id, model_id=known.model_id,
                                quality=fb.quality, source=fb.source)
        await channel.send(settings.feedback, encode(label), fb.prompt_id)
        return JSONResponse({"object": "feedback", "prompt_id": fb.prompt_id,
                             "model": known.model_id, "quality": fb.quality})

    return app


async def _complete(request: Request, body: Any, tenant: str | None, channel: ReplyChannel,
                    settings: GatewaySettings, models: list[str],
                    metrics: GatewayMetrics) -> JSONResponse:
    """One chat request: validated, sent, its outcome awaited and answered."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object (a chat-completions request)")
    target = parse_model(body.get("model"), settings.alias, models)
    raw_tau = request.headers.get("x-ipr-tolerance")
    header_tau = None if raw_tau is None else parse_tolerance(raw_tau, "x-ipr-tolerance")
    idempotency = request.headers.get("idempotency-key")
    prompt_id = (idempotent_prompt_id(tenant, idempotency[:200]) if idempotency
                 else f"gw-{uuid.uuid4().hex}")
    prompt = to_prompt_request(body, prompt_id=prompt_id, target=target, tenant=tenant,
                               header_tolerance=header_tau, reply_topic=channel.topic,
                               sent_at=time.time())
    headers = ipr_headers(prompt_id, tolerance=prompt.tolerance)
    if not channel.ready.is_set():
        raise ApiError(503, "the gateway is not ready (its reply channel is starting or "
                       "stopping)", code="not_ready", headers=headers)
    metrics.in_flight.inc()
    deadline = time.monotonic() + settings.request_timeout_s
    pending = None
    streaming = False
    try:
        pending = await channel.submit(prompt)
        if prompt.stream:
            stream, first = await _stream_start(prompt, pending, deadline, settings)
            streaming = True
            return StreamingResponse(_counted(stream.events(first), metrics),
                                     media_type="text/event-stream",
                                     headers=ipr_headers(prompt_id, first, prompt.tolerance))
        outcome = await asyncio.wait_for(asyncio.shield(pending.future),
                                         settings.request_timeout_s)
    except TimeoutError:
        raise timeout_error(prompt_id, settings.request_timeout_s, headers) from None
    except asyncio.CancelledError:
        if (pending is None or not pending.future.cancelled()
                or asyncio.current_task().cancelling()):
            raise  # the client went away, or the server stops
        raise ApiError(503, f"prompt {prompt_id}: the gateway stopped waiting for it (stopping, "
                       "or long overdue)", code="not_ready", headers=headers) from None
    finally:
        if not streaming:
            metrics.in_flight.dec()
    if isinstance(outcome, ModelResponse):
        headers = ipr_headers(prompt_id, outcome, prompt.tolerance)
        tracing.annotate({"gen_ai.response.model": outcome.model_id,
                          "gen_ai.usage.input_tokens": outcome.tokens_in,
                          "gen_ai.usage.output_tokens": outcome.tokens_out})
    error = outcome_error(outcome, prompt_id, headers)
    if error is not None:
        raise error
    return JSONResponse(chat_completion(outcome, int(time.time())), headers=headers)


async def _stream_start(prompt: PromptRequest, pending: Pending, deadline: float,
                        settings: GatewaySettings) -> tuple[Stream, StreamChunk]:
    """The stream and its first chunk; an outcome before any chunk is an HTTP error."""
    options = prompt.params.stream_options if prompt.params is not None else None
    stream = Stream(prompt.prompt_id, pending.chunks, pending.future, deadline,
                    settings.request_timeout_s, options is not None and options.include_usage)
    first = await stream.first()
    if not isinstance(first, StreamChunk):
        error = outcome_error(first, prompt.prompt_id, ipr_headers(
            prompt.prompt_id, first if isinstance(first, ModelResponse) else None,
            prompt.tolerance))
        assert error is not None  # an answer without error comes as a chunk
        raise error
    return stream, first


async def _counted(events: AsyncIterator[bytes], metrics: GatewayMetrics) -> AsyncIterator[bytes]:
    """The stream's events; the request is in flight until the last one (or the client left)."""
    try:
        async for event in events:
            yield event
    finally:
        metrics.in_flight.dec()


def _handlers(app: FastAPI, metrics: GatewayMetrics) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next):
        began = time.perf_counter()
        route = request.url.path if request.url.path in _ROUTES else "other"
        span = tracing.received(request.headers, request.method, route) if route in _TRACED \
            else None
        try:
            with tracing.active(span):  # what the request sends to Kafka continues its trace
                response = await call_next(request)
            tracing.responded(span, response.status_code)
        finally:
            if span is not None:
                span.end()
        metrics.requests.labels(route=route, status=str(response.status_code)).inc()
        metrics.latency.labels(route=route).observe(time.perf_counter() - began)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = (f"no route {request.method} {request.url.path[:100]}; expected "
                   "/v1/chat/completions, /v1/models, /v1/feedback, /health or /metrics")
        return JSONResponse(ApiError(e.status_code, message).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        log.error("gateway: %s %s failed: %s", request.method, request.url.path,
                  type(e).__name__)
        return JSONResponse(ApiError(500, f"internal error ({type(e).__name__})").body(),
                            status_code=500)


_ROUTES = frozenset({"/v1/chat/completions", "/v1/models", "/v1/feedback", "/health",
                     "/metrics"})
_TRACED = frozenset({"/v1/chat/completions", "/v1/feedback"})
