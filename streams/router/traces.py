"""The router's spans: one per prompt of a batch (``process prompts.in``), continuing the trace in
the prompt's record headers, with what was decided; their context goes in the headers of what the
router writes for the prompt (:mod:`streams.tracing`)."""

from __future__ import annotations

from streams import tracing
from streams.router.routing import BatchResult

Spans = dict[tuple[int, int], object]  # (partition, offset) of the prompts.in record -> span


def start(events, result: BatchResult, start_ns: int, group: str) -> Spans:
    """The batch's spans, begun when it was taken (none when tracing is off)."""
    if tracing.TRACER is None:
        return {}
    routed = {(r.partition, r.offset): r for r in result.routed}
    dead = {(d.partition, d.offset): d for d in result.dead}
    spans: Spans = {}
    for e in events:
        m = e.message
        where = (m.partition, m.offset)
        r = routed.get(where)
        attrs = None if r is None else {
            "ipr.model": r.prompt.model_id,
            "ipr.tolerance": r.prompt.tolerance,
            "ipr.router_version": r.prompt.router_version,
            "ipr.tenant": r.prompt.tenant,
            "ipr.estimated_cost_usd": r.prompt.estimated_cost_usd[r.prompt.model_id],
            "ipr.attempt": r.prompt.attempt,
            "ipr.routing_ms": r.prompt.routing_latency_ms,
        }
        span = tracing.consumed(m.topic, m.partition, m.offset, group, m.key, m.headers,
                                start_ns, attrs)
        if where in dead:
            tracing.failed(span, dead[where].error_kind)
        spans[where] = span
    return spans


def headers(spans: Spans, partition: int, offset: int):
    """Headers that carry the prompt's span on, for what the router writes for it."""
    return tracing.headers_of(spans.get((partition, offset))) if spans else None


def end(spans: Spans) -> None:
    for span in spans.values():
        span.end()
