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
    r = shadow_report(live, shadow, labels, version="s1")
    assert r["version"] == "s1" and r["paired"] == 3 and r["unpaired_shadow"] == 1
    assert r["shadow_versions"] == {"s0": 1, "s1": 4} and r["live_versions"] == {"v1": 3}
    assert r["agreed"] == 2 and r["agreement"] == pytest.approx(2 / 3)
    assert r["live"]["models"] == {"mid": 2, "small": 1}
    assert r["shadow"]["models"] == {"big": 1, "mid": 1, "small": 1}
    assert r["live"]["estimated_cost_usd"] == pytest.approx(0.21)
    assert r["shadow"]["estimated_cost_usd"] == pytest.approx(1.11)
    # live: p1 mid 0.0, p2 mid (1.0 + 0.5) / 2; shadow: p1 big 1.0, p2 mid 0.75
    assert r["labelled_both"] == 2 and r["quality_difference"] == pytest.approx(0.5)
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


def test_quality_is_compared_on_the_prompts_labelled_for_both_sides():
    """The probe's case: labels for 40 live choices and for 9 shadow choices on other prompts
    gave two means over different prompts; only the prompts labelled for both count."""
    live = [decision(f"p{i}", "mid", "v1") for i in range(60)]
    shadow = [decision(f"p{i}", "big" if i >= 40 else "mid", "s1", "v1") for i in range(60)]
    labels = [label(f"p{i}", "mid", 0.2) for i in range(40)]  # live choices (and agreements)
    labels += [label(f"p{i}", "big", 0.9) for i in range(50, 59)]  # shadow only, other prompts
    labels += [label("p45", "mid", 0.4), label("p45", "big", 1.0)]  # both sides on p45
    r = shadow_report(live, shadow, labels)
    assert r["version"] == "s1"  # the version reported on, not null
    assert r["labelled_both"] == 41  # p0..p39 (agreed: one label serves both) and p45
    assert r["live"]["labelled"] == r["shadow"]["labelled"] == 41
    assert r["live"]["labelled_alone"] == 41 and r["shadow"]["labelled_alone"] == 50
    assert r["live"]["quality"] == pytest.approx((40 * 0.2 + 0.4) / 41)
    assert r["shadow"]["quality"] == pytest.approx((40 * 0.2 + 1.0) / 41)
    assert r["quality_difference"] == pytest.approx(0.6 / 41)
    assert "on the 41 prompts labelled for both" in render(r)
    disjoint = shadow_report(live, shadow, labels[:49])  # no prompt labelled for both sides
    assert disjoint["labelled_both"] == 40 and disjoint["quality_difference"] == 0.0
    apart = shadow_report(live[40:], shadow[40:], labels[40:49])
    assert apart["labelled_both"] == 0 and apart["live"]["quality"] is None
    assert apart["shadow"]["quality"] is None and apart["quality_difference"] is None
    assert "no prompt labelled for both (9 for shadow alone)" in render(apart)


def test_the_version_defaults_to_the_latest_shadow_decisions():
    live = [decision("p1", "mid", "v1"), decision("p2", "mid", "v1")]
    old, new = decision("p1", "big", "s0", "v1"), decision("p2", "big", "s1", "v1")
    new.routed_at = 2.0
    r = shadow_report(live, [new, old])
    assert r["version"] == "s1" and r["paired"] == 1
    assert r["shadow_versions"] == {"s0": 1, "s1": 1}
