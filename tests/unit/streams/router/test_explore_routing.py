"""Exploration in the router's decision path: the decision says so, and allowed_models holds."""

from __future__ import annotations

import numpy as np

from ipr_model.serving.explore import explored
from streams.router.routing import route_records
from tests.unit.streams.router.test_routing import TableScorer, rec, req


class Onboarding(TableScorer):
    """small (cheapest, worst) is onboarding: the rule must leave it out."""

    onboarding = frozenset({"small"})


def route(scorer, n, share, **kw):
    records = [rec(i, req(f"p{i}", tolerance=1.0, **kw)) for i in range(n)]
    return route_records(records, scorer, 1.0, explore_share=share).routed


def test_share_0_routes_by_the_rule_and_an_onboarding_model_gets_nothing():
    out = route(Onboarding(), 200, 0.0)
    # at tolerance 1 the cheapest feasible is small, but it is onboarding: mid instead
    assert {r.prompt.model_id for r in out} == {"mid"}
    assert {r.decision.variant for r in out} == {"ipr_pair"}  # between big and mid
    assert all(r.decision.reason is None for r in out)
    plain = route(TableScorer(), 200, 0.0)
    assert {r.prompt.model_id for r in plain} == {"small"}  # without onboarding: as before


def test_explored_prompts_go_to_the_onboarding_model_and_say_why():
    out = route(Onboarding(), 400, 0.1)
    new = [r for r in out if r.prompt.model_id == "small"]
    assert {r.prompt.prompt_id for r in new} == {
        f"p{i}" for i in range(400) if explored(f"p{i}", 0.1)}
    assert 0.05 < len(new) / 400 < 0.15
    assert all(r.decision.variant == "explore" and r.decision.reason == "onboarding"
               for r in new)
    assert all(r.topic == "prompts.routed.small" for r in new)


def test_exploration_never_leaves_allowed_models():
    out = route(Onboarding(), 300, 1.0, allowed_models=["big", "mid"])
    assert {r.prompt.model_id for r in out} <= {"big", "mid"}
    assert all(r.decision.variant != "explore" for r in out)


def test_win_back_explores_the_model_feedback_lowered():
    # big's 0.9 includes -0.3 from feedback: at tolerance 0 the rule picks big anyway, so use
    # a lowered mid: the rule at tolerance 1 picks small; explored prompts go to mid
    scorer = TableScorer(feedback=np.array([0.0, -0.3, 0.0]))
    out = route(scorer, 400, 0.2)
    back = [r for r in out if r.decision.variant == "explore"]
    assert back and all(r.prompt.model_id == "mid" and r.decision.reason == "win_back"
                        for r in back)
    assert {r.prompt.model_id for r in out if r.decision.variant != "explore"} == {"small"}


def test_an_explored_prompt_fails_over_to_the_rules_ranking():
    out = route(Onboarding(), 400, 0.1)
    new = [r for r in out if r.prompt.model_id == "small"]
    ruled = [r for r in out if r.prompt.model_id != "small"]
    assert new and ruled
    # the onboarding model first, then the rule's feasible models (small is not among them)
    assert {tuple(r.prompt.ranking) for r in new} == {("small", "mid", "big")}
    assert {tuple(r.decision.ranking) for r in ruled} == {("mid", "big")}
