"""Prometheus metrics of the router, served at ``/metrics`` on the Faust web port.

Counters whose label values are known in advance start at zero (a dead-letter kind, a swap's
result, each model of the version served), so that a rate over the first event is not lost: a
series that appears with its first increment shows no increase. :class:`RouterState` reads gauges
from the router's state when scraped (which models are left out as unhealthy, each budgeted
tenant's spend and budget). Which panel of the dashboard reads what: docs/design.md, "Metrics
and the dashboard".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.codec import ERROR_KINDS

if TYPE_CHECKING:
    from ipr_model.serving.scorer import Scorer
    from streams.router.routing import BatchResult

ROUTED = Counter("ipr_router_routed_total", "prompts routed, by chosen model", ["model"])
DEAD_LETTERS = Counter(
    "ipr_router_dead_letters_total", "records dead-lettered, by reason", ["reason"]
)
DEAD_LETTER_KINDS = (*ERROR_KINDS, "key_mismatch", "unknown_model", "not_allowed",
                     "budget_exceeded", "routing_error")
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
ESTIMATED_COST = Counter(
    "ipr_router_estimated_cost_usd_total",
    "the chosen model's estimated cost of each routed prompt, by chosen model", ["model"],
)
REFERENCE_COST = Counter(
    "ipr_router_reference_cost_usd_total",
    "the reference model's estimated cost of each routed prompt (what always routing to it "
    "would cost; the model with the highest mean recorded quality on the version's train "
    "split), by reference model", ["model"],
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

for _kind in DEAD_LETTER_KINDS:
    DEAD_LETTERS.labels(_kind)
for _result in ("loaded", "refused"):
    ARTIFACT_SWAPS.labels(_result)
    SHADOW_LOADS.labels(_result)


def serving(scorer: Scorer) -> None:
    """A version is served: its models' counters start at zero (once per model and process)."""
    for m in scorer.model_ids:
        ROUTED.labels(m)
        ESTIMATED_COST.labels(m)
    if scorer.reference is not None:
        REFERENCE_COST.labels(scorer.reference)


def observe(result: BatchResult, n: int, reference: str | None) -> None:
    """A routed batch of ``n`` records: its outcomes, latencies and estimated costs
    (``reference``: the version's reference model)."""
    now = time.time()
    BATCH_SIZE.observe(n)
    SCORING_SECONDS.observe(result.scoring_ms / 1000.0)
    for r in result.routed:
        p = r.prompt
        ROUTED.labels(p.model_id).inc()
        ESTIMATED_COST.labels(p.model_id).inc(p.estimated_cost_usd[p.model_id])
        if reference is not None and r.reference_cost_usd is not None:
            REFERENCE_COST.labels(reference).inc(r.reference_cost_usd)
        for m in p.unhealthy_models or ():
            UNHEALTHY_LEFT_OUT.labels(m).inc()
        ROUTING_SECONDS.observe(p.routing_latency_ms / 1000.0)
        if p.sent_at:
            E2E_SECONDS.observe(max(0.0, now - p.sent_at))
    for d in result.dead:
        DEAD_LETTERS.labels(d.error_kind).inc()


@dataclass(frozen=True)
class Budget:
    """A budgeted tenant's spend this period (its answers' cost_usd) and its budget."""

    tenant: str
    period: str
    spend_usd: float
    budget_usd: float


class RouterState(Collector):
    """Gauges read from the router's state at each scrape: ``ipr_router_model_unhealthy``
    (1 while routers leave a model out as unhealthy, else 0, for every model of the version
    served) and ``ipr_router_tenant_spend_usd`` / ``ipr_router_tenant_budget_usd`` (each tenant
    whose policy has a budget, this period). The router of this process sets the sources
    (``streams.router.app``)."""

    def __init__(self) -> None:
        self.models: Callable[[], Sequence[str]] = tuple
        self.unhealthy: Callable[[], Collection[str]] = frozenset
        self.budgets: Callable[[], Iterable[Budget]] = tuple

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families())

    def collect(self) -> list[GaugeMetricFamily]:
        unhealthy, spend, budget = self._families()
        left_out = set(self.unhealthy())
        for m in self.models():
            unhealthy.add_metric([m], 1.0 if m in left_out else 0.0)
        for b in self.budgets():
            spend.add_metric([b.tenant, b.period], b.spend_usd)
            budget.add_metric([b.tenant, b.period], b.budget_usd)
        return [unhealthy, spend, budget]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("ipr_router_model_unhealthy", "1 while the model is left out of "
                              "the candidates as unhealthy (a worker's report, until it is "
                              "healthy or expires), else 0", labels=["model"]),
            GaugeMetricFamily("ipr_router_tenant_spend_usd", "a budgeted tenant's spend this "
                              "period (its answers' cost_usd), by tenant and period",
                              labels=["tenant", "period"]),
            GaugeMetricFamily("ipr_router_tenant_budget_usd", "a tenant's budget per period, "
                              "from its policy", labels=["tenant", "period"]),
        )


STATE = RouterState()
REGISTRY.register(STATE)
