"""The router's metrics: what a batch adds to the estimated costs (the chosen model's, and the
reference model's whether the prompt could go there or not), the counters that start at zero,
and the gauges read from the router's state when scraped."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from ipr_model.serving.scorer import reference_model
from streams.router import metrics
from streams.router.routing import route_records
from tests.unit.streams.router.test_routing import TableScorer, rec, req


class WithReference(TableScorer):
    reference = "big"  # best and dearest: 10.0 a prompt


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_batch_adds_the_chosen_and_the_reference_estimates():
    records = [rec(0, req("a", tolerance=0.0)), rec(1, req("b", tolerance=1.0)),
               rec(2, req("c", tolerance=0.0, allowed_models=["mid", "small"])), rec(3, b"{")]
    out = route_records(records, WithReference(), 0.5)
    assert [r.reference_cost_usd for r in out.routed] == [10.0, 10.0, 10.0]  # c: not allowed
    chosen = {m: value("ipr_router_estimated_cost_usd_total", model=m) for m in ("big", "mid",
                                                                               "small")}
    ref = value("ipr_router_reference_cost_usd_total", model="big")
    dead = value("ipr_router_dead_letters_total", reason="invalid_json")
    metrics.observe(out, len(records), "big")
    assert value("ipr_router_estimated_cost_usd_total", model="big") - chosen["big"] == 10.0
    assert value("ipr_router_estimated_cost_usd_total", model="mid") - chosen["mid"] == 1.0
    assert value("ipr_router_estimated_cost_usd_total", model="small") - chosen["small"] == (
        pytest.approx(0.1))
    assert value("ipr_router_reference_cost_usd_total", model="big") - ref == 30.0
    assert value("ipr_router_dead_letters_total", reason="invalid_json") - dead == 1.0


def test_a_version_without_a_reference_adds_no_reference_cost():
    out = route_records([rec(0, req("a"))], TableScorer(), 0.5)
    assert out.routed[0].reference_cost_usd is None


def test_counters_whose_labels_are_known_start_at_zero():
    names = {s.labels.get("reason") for m in REGISTRY.collect()
             if m.name == "ipr_router_dead_letters" for s in m.samples}
    assert {"budget_exceeded", "unsupported", "too_deep", "not_allowed"} <= names
    assert REGISTRY.get_sample_value("ipr_router_artifact_swaps_total",
                                     {"result": "refused"}) is not None


def test_the_gauges_read_the_routers_state_when_scraped():
    state = metrics.RouterState()
    state.models = lambda: ["big", "mid"]
    state.unhealthy = lambda: frozenset({"mid"})
    state.budgets = lambda: [metrics.Budget("acme", "day", 0.25, 1.0)]
    got = {m.name: [(s.labels, s.value) for s in m.samples] for m in state.collect()}
    assert got == {
        "ipr_router_model_unhealthy": [({"model": "big"}, 0.0), ({"model": "mid"}, 1.0)],
        "ipr_router_tenant_spend_usd": [({"tenant": "acme", "period": "day"}, 0.25)],
        "ipr_router_tenant_budget_usd": [({"tenant": "acme", "period": "day"}, 1.0)],
    }
    assert [m.name for m in state.describe()] == list(got)


@pytest.mark.parametrize(("figures", "reference"), [
    ({"a": {"mean_quality": 0.7}, "b": {"mean_quality": 0.9}, "c": None}, "b"),
    ({"a": {"mean_quality": 0.9}, "b": {"mean_quality": 0.9}}, "a"),  # a tie: the smaller id
    ({"a": {"prompts": 3}, "b": None}, None),
])
def test_the_reference_is_the_best_model_on_the_train_split(figures, reference):
    class Card:
        def __init__(self, id: str, train: dict | None) -> None:
            self.id, self.info = id, {} if train is None else {"train": train}

    assert reference_model([Card(m, t) for m, t in figures.items()]) == reference


def test_an_onboarding_model_is_never_the_reference():
    class Card:
        id, info = "new", {"onboarding": True, "train": {"mean_quality": 1.0}}

    assert reference_model([Card()]) is None
