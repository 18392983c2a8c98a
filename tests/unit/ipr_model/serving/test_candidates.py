"""The narrowing of a prompt's candidates: each reason a model is left out, the fallbacks when
health or onboarding would leave none, exploration's picks, and the tenant's allowed models."""

from __future__ import annotations

import numpy as np
import pytest

from ipr_model.errors import RoutingInputError
from ipr_model.serving.candidates import (
    NOT_ALLOWED,
    NOT_SERVED,
    ONBOARDING,
    UNHEALTHY,
    allowed_mask,
    narrow,
    tenant_allowed,
    unknown_models,
)
from ipr_model.serving.decision import decide
from ipr_model.serving.explore import explored
from ipr_model.serving.scorer import Scorer, Scores

IDS = ["big", "mid", "small", "new"]


def rows(mask) -> list[list[str]]:
    return [[m for m, ok in zip(IDS, row, strict=True) if ok] for row in mask]


def test_everything_is_a_candidate_without_restrictions():
    c = narrow(IDS, 2)
    assert rows(c.ruled) == [IDS, IDS]
    assert c.left_out(0) == {} and c.unhealthy(0) == [] and c.explore == [None, None]


def test_a_model_the_prompt_does_not_allow_is_left_out_as_not_allowed():
    c = narrow(IDS, 3, [["mid", "big"], None, []])  # None and [] allow every model
    assert rows(c.allowed) == [["big", "mid"], IDS, IDS]
    assert c.left_out(0) == {"small": NOT_ALLOWED, "new": NOT_ALLOWED}
    assert c.left_out(1) == c.left_out(2) == {}


def test_an_unknown_model_is_an_error_naming_it():
    assert unknown_models(IDS, ["zz", "big", "aa"]) == ["aa", "zz"]
    assert unknown_models(IDS, None) == []
    with pytest.raises(RoutingInputError, match="unknown model.*ghost; known: big, mid"):
        narrow(IDS, 2, [None, ["big", "ghost"]])
    with pytest.raises(RoutingInputError, match="ghost"):
        allowed_mask(IDS, ["ghost"])


def test_an_unhealthy_model_is_left_out_as_unhealthy():
    c = narrow(IDS, 2, [None, ["big", "mid"]], unhealthy={"mid", "small"})
    assert rows(c.ruled) == [["big", "new"], ["big"]]
    assert c.unhealthy(0) == ["mid", "small"] and c.unhealthy(1) == ["mid"]
    assert c.left_out(1) == {"mid": UNHEALTHY, "small": NOT_ALLOWED, "new": NOT_ALLOWED}


def test_when_health_would_leave_none_the_prompt_keeps_its_unhealthy_candidates():
    c = narrow(IDS, 2, [["mid", "small"], None], unhealthy={"mid", "small"})
    assert rows(c.routable) == [["mid", "small"], ["big", "new"]]
    assert c.unhealthy(0) == [] and UNHEALTHY not in c.left_out(0).values()
    assert c.unhealthy(1) == ["mid", "small"]
    everything = narrow(IDS, 1, unhealthy=set(IDS))
    assert rows(everything.ruled) == [IDS] and everything.unhealthy(0) == []


def test_a_model_no_live_worker_serves_is_left_out_as_not_served():
    c = narrow(IDS, 2, [None, ["mid", "small"]], unhealthy={"big"}, unserved={"mid", "new"})
    assert rows(c.ruled) == [["small"], ["small"]]
    assert c.unserved(0) == ["mid", "new"] and c.unhealthy(0) == ["big"]
    assert c.left_out(1) == {"big": NOT_ALLOWED, "mid": NOT_SERVED, "new": NOT_ALLOWED}


def test_when_no_candidate_is_served_the_prompt_keeps_them_all():
    # it waits on its model's topic for a worker, as a prompt did before workers announced
    c = narrow(IDS, 2, [["mid", "new"], None], unserved={"mid", "new"})
    assert rows(c.ruled) == [["mid", "new"], ["big", "small"]]
    assert c.unserved(0) == [] and c.unserved(1) == ["mid", "new"]


def test_an_onboarding_model_is_left_out_of_the_rule_but_stays_routable():
    c = narrow(IDS, 1, onboarding={"new"})
    assert rows(c.routable) == [IDS] and rows(c.ruled) == [["big", "mid", "small"]]
    assert c.left_out(0) == {"new": ONBOARDING}


def test_when_onboarding_would_leave_none_the_rule_gets_the_onboarding_models():
    c = narrow(IDS, 2, [["new"], ["new", "big"]], unhealthy={"big"}, onboarding={"new"})
    assert rows(c.ruled) == [["new"], ["new"]]
    assert c.left_out(1) == {"big": UNHEALTHY, "mid": NOT_ALLOWED, "small": NOT_ALLOWED}


def test_an_unhealthy_onboarding_model_is_left_out_as_unhealthy():
    c = narrow(IDS, 1, unhealthy={"new"}, onboarding={"new"})
    assert c.left_out(0) == {"new": UNHEALTHY}


def test_exploration_sends_its_share_to_a_routable_onboarding_model():
    pids = [f"p{i}" for i in range(300)]
    c = narrow(IDS, 300, onboarding={"new"}, prompt_ids=pids, explore_share=0.2)
    assert [i for i, p in enumerate(c.explore) if p] == [
        i for i, p in enumerate(pids) if explored(p, 0.2)]
    assert {p for p in c.explore if p} == {(3, "onboarding")}
    assert narrow(IDS, 300, onboarding={"new"}, prompt_ids=pids).explore == [None] * 300
    assert narrow(IDS, 300, onboarding={"new"}, explore_share=1.0).explore == [None] * 300
    # never outside the routable models: not allowed, or unhealthy
    for kw in ({"allowed": [["big", "mid"]] * 300}, {"unhealthy": {"new"}}):
        c = narrow(IDS, 300, onboarding={"new"}, prompt_ids=pids, explore_share=1.0, **kw)
        assert c.explore == [None] * 300


def test_exploration_wins_back_the_model_the_feedback_lowered_most():
    lowered = np.tile([0.0, -0.2, -0.4, 0.0], (2, 1))
    c = narrow(IDS, 2, [None, ["big", "mid"]], prompt_ids=["a", "b"], explore_share=1.0,
               lowered=lowered)
    assert c.explore == [(2, "win_back"), (1, "win_back")]


def test_the_tenants_allowed_models_narrow_the_prompts():
    assert tenant_allowed(None, None, IDS) is None
    assert tenant_allowed(["mid"], None, IDS) == ["mid"]
    assert tenant_allowed(None, ["small", "ghost", "big"], IDS) == ["small", "big"]
    assert tenant_allowed(None, ["small", "ghost"], None) == ["small", "ghost"]
    assert tenant_allowed(["big", "mid", "new"], ["mid", "big"], IDS) == ["big", "mid"]
    assert tenant_allowed(["new"], ["mid", "big"], IDS) == []


class Table(Scorer):
    def __init__(self, onboarding=frozenset()):
        self.model_ids = IDS
        self.onboarding = frozenset(onboarding)


def scores(n: int) -> Scores:
    q = np.tile([0.9, 0.8, 0.3, 0.1], (n, 1))
    c = np.tile([10.0, 1.0, 0.1, 0.01], (n, 1))
    return Scores(quality=q, cost=c, embeddings=np.zeros((n, 2)))


def test_the_rule_chooses_among_the_narrowed_candidates_only():
    d = decide(Table({"new"}), scores(2), [1.0, 1.0], [None, ["big", "mid"]], unhealthy={"small"})
    assert [x.model_id for x in d] == ["mid", "mid"]  # new is onboarding, small unhealthy
    assert d[0].unhealthy_models == ["small"] and d[1].unhealthy_models is None
    assert d[0].ranking == ["mid", "big"] and d[0].rule == "ipr_pair"
    assert set(d[1].predicted_quality) == {"big", "mid"}


def test_an_explored_prompt_says_so_only_when_it_goes_elsewhere_than_the_rule():
    table = Table({"new"})
    out = decide(table, scores(1), [1.0], prompt_ids=["p"], explore_share=1.0)[0]
    assert (out.model_id, out.rule, out.reason) == ("new", "explore", "onboarding")
    assert out.ranking == ["new", "small", "mid", "big"]
    # only the onboarding model allowed: the rule chooses it, nothing is explored
    same = decide(table, scores(1), [1.0], [["new"]], prompt_ids=["p"], explore_share=1.0)[0]
    assert (same.model_id, same.rule, same.reason) == ("new", "ipr", None)
