"""The worker's spans: the model call (``chat <model>``, a client span under the record's
``process`` span) with OpenTelemetry's GenAI attributes; never the prompt's or the answer's text
(:mod:`streams.tracing`)."""

from __future__ import annotations

from schemas import RoutedPrompt
from streams import tracing
from streams.worker.backends.base import Completion


def call_span(span, routed: RoutedPrompt, provider: str):
    """The started span of the model call for ``routed`` (None when ``span`` is)."""
    p = routed.params
    return tracing.child(span, f"chat {routed.model_id}", "CLIENT", {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": routed.model_id,
        "gen_ai.request.max_tokens": p.requested_tokens() if p is not None else None,
        "gen_ai.request.temperature": getattr(p, "temperature", None),
        "gen_ai.request.top_p": getattr(p, "top_p", None),
        "gen_ai.request.stream": routed.stream or None,
        "ipr.attempt": routed.attempt,
    })


def call_ended(call, c: Completion) -> None:
    """What the call gave (tokens, finish reason, cost, or its error), on its span, ended."""
    if call is None:
        return
    attrs = {
        "gen_ai.response.model": c.response_model,
        "gen_ai.usage.input_tokens": c.tokens_in,
        "gen_ai.usage.output_tokens": c.tokens_out,
        "gen_ai.response.finish_reasons": [c.finish_reason] if c.finish_reason else None,
        "ipr.cost_usd": c.cost_usd,
    }
    call.set_attributes({k: v for k, v in attrs.items() if v is not None})
    if c.error is not None:
        tracing.failed(call, c.error_type or "backend_error")
        if c.error_status is not None:
            call.set_attribute("http.response.status_code", c.error_status)
    call.end()


def provider(backend) -> str:
    """The ``gen_ai.provider.name`` of a backend: openai for an OpenAI-compatible server."""
    name = type(backend).__name__.removesuffix("Backend").lower()
    return name if name == "openai" else f"ipr.{name}"
