"""The IPR routing rule: hand-worked tables and properties on random matrices."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipr_model.errors import RoutingInputError
from ipr_model.serving.rule import applied_rule, feasible_mask, ranking, route, route_batch

IDS = ["a", "b", "c"]
Q = [0.9, 0.5, 0.7]
C = [3.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "quality, cost, tau, ids, allowed, variant, delta, want, threshold",
    [
        # tau = 0: the best predicted model, whatever it costs
        (Q, C, 0.0, IDS, None, "ipr", 0.0, 0, 0.9),
        # tau = 1: every model is feasible, the cheapest wins
        (Q, C, 1.0, IDS, None, "ipr", 0.0, 1, 0.5),
        # r = 0.9 - 0.5 * 0.4 = 0.7: a and c feasible, c is cheaper
        (Q, C, 0.5, IDS, None, "ipr", 0.0, 2, 0.7),
        # r = 0.9 - 0.25 * 0.4 = 0.8: only a
        (Q, C, 0.25, IDS, None, "ipr", 0.0, 0, 0.8),
        # equal cost: the higher predicted quality
        ([0.6, 0.8, 0.5], [1.0, 1.0, 5.0], 1.0, IDS, None, "ipr", 0.0, 1, 0.5),
        # equal cost and quality: the lexicographically smaller id ("a" at index 1)
        ([0.7, 0.7, 0.9], [1.0, 1.0, 5.0], 1.0, ["b", "a", "c"], None, "ipr", 0.0, 1, 0.7),
        # allowed narrows the candidates: best allowed at tau 0, cheapest allowed at tau 1
        (Q, C, 0.0, IDS, ["b", "c"], "ipr", 0.0, 2, 0.7),
        (Q, C, 1.0, IDS, ["a", "c"], "ipr", 0.0, 2, -0.1),
        # two candidates: r = 0.9 - tau; c (0.7) is feasible from tau = 0.2 on
        (Q, C, 0.15, IDS, ["a", "c"], "ipr", 0.0, 0, 0.75),
        (Q, C, 0.25, IDS, ["a", "c"], "ipr", 0.0, 2, 0.65),
        # three candidates keep the range: r = 0.9 - 0.2 * (0.9 - 0.5) = 0.82, only a
        (Q, C, 0.2, IDS, None, "ipr", 0.0, 0, 0.82),
        # dynamic max: r = (1 - 0.25) * 0.8 - 0.05 = 0.55: a and c feasible, c cheaper
        ([0.8, 0.5, 0.6], C, 0.25, IDS, None, "dynamic_max", 0.05, 2, 0.55),
        # dynamic max without margin: r = 0.9 * 0.8 = 0.72: only a
        ([0.8, 0.5, 0.6], C, 0.1, IDS, None, "dynamic_max", 0.0, 0, 0.72),
        # regression: q_max - (q_max - q_min) rounds one ulp above q_min for these
        ([0.9350724237877682, 0.05624275855897737, 0.5], [2.0, 1.0, 3.0], 1.0, ["x", "y", "z"],
         None, "ipr", 0.0, 1, 0.05624275855897737),
    ],
)
def test_route_table(quality, cost, tau, ids, allowed, variant, delta, want, threshold):
    choice = route(quality, cost, tau, ids, allowed=allowed, variant=variant, delta=delta)
    assert choice.index == want
    assert choice.threshold == pytest.approx(threshold, abs=1e-12)


def test_between_two_candidates_tau_is_a_knob_not_a_switch():
    """The weaker model becomes feasible at tau = q_strong - q_weak, not only at 1."""
    q, c, ids = [0.9, 0.8], [3.0, 1.0], ["strong", "weak"]
    assert route(q, c, 0.09, ids).index == 0
    assert route(q, c, 0.11, ids).index == 1
    taus = np.linspace(0.0, 1.0, 101)
    gaps = np.random.default_rng(0).uniform(0.0, 0.5, 200)
    qq = np.stack([np.full(200, 0.9), 0.9 - gaps], axis=1)
    share = [route_batch(qq, np.tile(c, (200, 1)), t, ids)[0].mean() for t in taus]
    assert share[0] == 0.0 and share[-1] == 1.0
    assert len(set(share)) > 40  # many operating points, not two


def test_applied_rule_names_the_pair_rule():
    masks = np.array([[True, True, False], [True, True, True], [False, True, False]])
    assert applied_rule(masks, "ipr").tolist() == ["ipr_pair", "ipr", "ipr"]
    assert applied_rule(masks, "dynamic_max").tolist() == ["dynamic_max"] * 3


def test_unknown_allowed_model_raises():
    with pytest.raises(RoutingInputError, match="zzz"):
        route(Q, C, 0.5, IDS, allowed=["a", "zzz"])


@pytest.mark.parametrize("tau", [1.5, -0.1, math.nan])
def test_tolerance_out_of_range_raises(tau):
    with pytest.raises(RoutingInputError, match="tolerance"):
        route(Q, C, tau, IDS)


def test_negative_delta_and_unknown_variant_raise():
    with pytest.raises(RoutingInputError):
        route(Q, C, 0.5, IDS, variant="dynamic_max", delta=-0.1)
    with pytest.raises(RoutingInputError):
        route(Q, C, 0.5, IDS, variant="nope")


# ---- properties on random matrices -------------------------------------------------------------

unit = st.floats(0.0, 1.0, allow_nan=False)
price = st.floats(0.0, 10.0, allow_nan=False)


@st.composite
def problems(draw):
    n = draw(st.integers(1, 5))
    m = draw(st.integers(1, 6))
    # few distinct values so that ties are common
    pool_q = draw(st.lists(unit, min_size=1, max_size=4))
    pool_c = draw(st.lists(price, min_size=1, max_size=4))
    q = np.array([[draw(st.sampled_from(pool_q)) for _ in range(m)] for _ in range(n)])
    c = np.array([[draw(st.sampled_from(pool_c)) for _ in range(m)] for _ in range(n)])
    mask = np.array(draw(st.lists(st.booleans(), min_size=m, max_size=m)))
    mask[draw(st.integers(0, m - 1))] = True
    ids = [f"m{j:02d}" for j in draw(st.permutations(range(m)))]
    return q, c, mask, ids


@settings(max_examples=300, deadline=None)
@given(problems(), st.sampled_from(["ipr", "range", "dynamic_max"]), st.floats(0.0, 0.2))
def test_properties(problem, variant, delta):
    q, c, mask, ids = problem
    n = len(q)
    rows = np.arange(n)
    q_allowed = np.where(mask, q, -np.inf)
    c_allowed = np.where(mask, c, np.inf)

    best, _ = route_batch(q, c, 0.0, ids, mask, variant, delta if variant == "ipr" else 0.0)
    assert np.all(q[rows, best] == q_allowed.max(axis=1))

    cheap, _ = route_batch(q, c, 1.0, ids, mask, variant, delta)
    assert np.all(c[rows, cheap] == c_allowed.min(axis=1))

    prev = np.full(n, np.inf)
    for tau in np.linspace(0.0, 1.0, 21):
        idx, r = route_batch(q, c, tau, ids, mask, variant, delta)
        assert mask[idx].all()  # only allowed models
        chosen_q = q[rows, idx]
        assert np.all((chosen_q >= r) | (chosen_q == q_allowed.max(axis=1)))  # feasible
        cost = c[rows, idx]
        assert np.all(cost <= prev)  # estimated cost never rises with tau
        prev = cost


@pytest.mark.parametrize(
    "quality, cost, tau, allowed, want",
    [
        # tau = 1: every model feasible, cheapest first: b (1.0), c (2.0), a (3.0)
        (Q, C, 1.0, None, ["b", "c", "a"]),
        # r = 0.7: a and c feasible, c is cheaper
        (Q, C, 0.5, None, ["c", "a"]),
        # tau = 0: only the best
        (Q, C, 0.0, None, ["a"]),
        # allowed narrows the ranking too
        (Q, C, 1.0, ["a", "c"], ["c", "a"]),
        # equal cost: the higher quality first; equal both: the smaller id first
        ([0.6, 0.8, 0.8], [1.0, 1.0, 1.0], 1.0, None, ["b", "c", "a"]),
    ],
)
def test_ranking_table(quality, cost, tau, allowed, want):
    mask = np.array([allowed is None or m in allowed for m in IDS])
    _, r = route_batch(np.array([quality]), np.array([cost]), tau, IDS, mask)
    feasible = feasible_mask(np.array([quality]), r, mask)[0]
    assert ranking(quality, cost, feasible, IDS) == want


@settings(max_examples=200, deadline=None)
@given(problems(), st.sampled_from(["ipr", "range", "dynamic_max"]), st.floats(0.0, 1.0))
def test_ranking_starts_with_the_choice_and_holds_exactly_the_feasible(problem, variant, tau):
    q, c, mask, ids = problem
    idx, r = route_batch(q, c, tau, ids, mask, variant)
    feasible = feasible_mask(q, r, mask)
    for i in range(len(q)):
        ranked = ranking(q[i], c[i], feasible[i], ids)
        assert ranked[0] == ids[idx[i]]
        assert sorted(ranked) == sorted(m for m, f in zip(ids, feasible[i], strict=True) if f)
        costs = [c[i, ids.index(m)] for m in ranked]
        assert costs == sorted(costs)
