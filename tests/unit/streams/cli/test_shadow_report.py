"""``ipr shadow report``'s pure function: pairs by prompt and live version, counts, costs and
labelled quality of each side."""

from __future__ import annotations

import pytest

from schemas import QualityFeedback, RoutingDecision
from streams.cli.shadow_report import render, shadow_report

COST = {"big": 1.0, "mid": 0.1, "small": 0.01}


def decision(pid: str, model: str, version: str, shadow_of: str | None = None) -> RoutingDecision:
    return RoutingDecision(
        prompt_id=pid, model_id=model, tolerance=0.2, threshold=0.5,
        predicted_quality={m: 0.5 for m in COST}, estimated_cost_usd=COST,
        router_version=version, routing_latency_ms=1.0, routed_at=1.0, shadow_of=shadow_of)


def label(pid: str, model: str, q: float) -> QualityFeedback:
    return QualityFeedback(prompt_id=pid, model_id=model, quality=q, source="test")


def test_pairs_counts_costs_and_quality_of_each_side():
    live = [decision("p1", "mid", "v1"), decision("p2", "mid", "v1"),
            decision("p3", "small", "v1"), decision("p4", "big", "v2"),  # p4: routed by v2
            decision("p1", "mid", "v1")]  # routed again after a crash: counts once
    shadow = [decision("p1", "big", "s1", "v1"), decision("p2", "mid", "s1", "v1"),
              decision("p3", "small", "s1", "v1"), decision("p4", "big", "s1", "v1"),
              decision("p5", "big", "s0", "v1")]  # p4, p5: no live decision of that version
    labels = [label("p1", "mid", 0.0), label("p2", "mid", 1.0), label("p2", "mid", 0.5),
              label("p1", "big", 1.0), label("p9", "mid", 1.0)]
    r = shadow_report(live, shadow, labels)
    assert r["paired"] == 3 and r["unpaired_shadow"] == 2
    assert r["shadow_versions"] == {"s0": 1, "s1": 4} and r["live_versions"] == {"v1": 3}
    assert r["agreed"] == 2 and r["agreement"] == pytest.approx(2 / 3)
    assert r["live"]["models"] == {"mid": 2, "small": 1}
    assert r["shadow"]["models"] == {"big": 1, "mid": 1, "small": 1}
    assert r["live"]["estimated_cost_usd"] == pytest.approx(0.21)
    assert r["shadow"]["estimated_cost_usd"] == pytest.approx(1.11)
    # live: p1 mid 0.0, p2 mid (1.0 + 0.5) / 2; shadow: p1 big 1.0, p2 mid 0.75
    assert r["live"]["labelled"] == 2 and r["live"]["quality"] == pytest.approx(0.375)
    assert r["shadow"]["labelled"] == 2 and r["shadow"]["quality"] == pytest.approx(0.875)
    assert r["switches"] == {"mid -> big": 1}
    assert "agreement 66.7% (2 of 3)" in render(r)


def test_one_version_only_and_nothing_to_pair():
    live = [decision("p1", "mid", "v1")]
    shadow = [decision("p1", "big", "s1", "v1"), decision("p1", "mid", "s0", "v1")]
    assert shadow_report(live, shadow, version="s1")["shadow"]["models"] == {"big": 1}
    empty = shadow_report([], [])
    assert empty["paired"] == 0 and empty["agreement"] is None
    assert empty["live"]["quality"] is None and "agreement n/a" in render(empty)
