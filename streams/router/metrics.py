"""Prometheus metrics of the router, served at ``/metrics`` on the Faust web port."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

ROUTED = Counter("ipr_router_routed_total", "prompts routed, by chosen model", ["model"])
DEAD_LETTERS = Counter(
    "ipr_router_dead_letters_total", "records dead-lettered, by reason", ["reason"]
)
BATCH_SIZE = Histogram(
    "ipr_router_batch_size", "records per micro-batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
SCORING_SECONDS = Histogram(
    "ipr_router_scoring_seconds", "encoder + adapters + rule time per batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ROUTING_SECONDS = Histogram(
    "ipr_router_routing_seconds", "from receipt of a prompt to its decision",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5),
)
E2E_SECONDS = Histogram(
    "ipr_router_end_to_end_seconds",
    "from the producer's sent_at to publication on the model topic",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
ARTIFACT_SWAPS = Counter("ipr_router_artifact_swaps_total", "artifact versions loaded", ["result"])
UNHEALTHY_LEFT_OUT = Counter(
    "ipr_router_unhealthy_left_out_total",
    "prompts for which a model was left out of the candidates as unhealthy, by model", ["model"],
)
HEALTH_REPORTS = Counter(
    "ipr_router_health_reports_total", "model health reports applied, by model and state",
    ["model", "state"],
)
SHADOW_LOADS = Counter(
    "ipr_router_shadow_loads_total", "shadow artifact versions loaded or refused", ["result"]
)
SHADOW_DECISIONS = Counter(
    "ipr_router_shadow_decisions_total",
    "prompts scored in shadow, by whether the shadow chose the live choice", ["agreement"],
)
SHADOW_FAILURES = Counter(
    "ipr_router_shadow_failures_total",
    "shadow decisions lost: prompts the shadow version failed to score, decisions not sent "
    "or not delivered (routing is unaffected)",
)
SHADOW_SECONDS = Histogram(
    "ipr_router_shadow_seconds", "shadow scoring time per batch, after the live routing",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def observe(result, n: int) -> None:
    """A routed batch (a ``streams.router.routing.BatchResult`` of ``n`` records), counted."""
    now = time.time()
    BATCH_SIZE.observe(n)
    SCORING_SECONDS.observe(result.scoring_ms / 1000.0)
    for r in result.routed:
        ROUTED.labels(r.prompt.model_id).inc()
        for m in r.prompt.unhealthy_models or ():
            UNHEALTHY_LEFT_OUT.labels(m).inc()
        ROUTING_SECONDS.observe(r.prompt.routing_latency_ms / 1000.0)
        if r.prompt.sent_at:
            E2E_SECONDS.observe(max(0.0, now - r.prompt.sent_at))
    for d in result.dead:
        DEAD_LETTERS.labels(d.error_kind).inc()
