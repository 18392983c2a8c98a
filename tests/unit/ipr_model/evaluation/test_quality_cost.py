"""Every metric against small hand-computed cases."""

import json
import math

import numpy as np
import pytest

from ipr_model.evaluation import quality_cost as M

# 3 prompts x 2 models. "big" always right at 10 USD; "small" right only on prompt 1, at 1 USD.
IDS = ["big", "small"]
TRUE_Q = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
TRUE_C = np.array([[10.0, 1.0], [10.0, 1.0], [10.0, 1.0]])
EST_C = np.array([[10.0, 1.0]] * 3)
# Oracle routing: tau < 1 sends prompts 0 and 2 to big and prompt 1 to small -> C = 21/3 = 7,
# Q = 1; tau = 1 sends all to small -> C = 1, Q = 1/3.


@pytest.fixture
def oracle_points():
    return M.operating_points(TRUE_Q, EST_C, TRUE_Q, TRUE_C, IDS)


@pytest.fixture
def refs():
    return M.reference_and_cheapest(TRUE_Q, TRUE_C)


def test_operating_points_hand_case(oracle_points):
    assert oracle_points.shape == (101, 2)
    np.testing.assert_allclose(oracle_points[:100], [[7.0, 1.0]] * 100)
    np.testing.assert_allclose(oracle_points[100], [1.0, 1 / 3])


def test_operating_points_measure_with_recorded_not_estimated_cost():
    # estimated costs say "small" is dearer; routing follows the estimate, the measure the record
    est = np.array([[1.0, 10.0]] * 3)
    pts = M.operating_points(TRUE_Q, est, TRUE_Q, TRUE_C, IDS, taus=np.array([1.0]))
    np.testing.assert_allclose(pts, [[10.0, 1.0]])


def test_reference_and_cheapest(refs):
    assert (refs.ref_idx, refs.ref_cost, refs.ref_quality) == (0, 10.0, 1.0)
    assert (refs.cheap_idx, refs.cheap_cost) == (1, 1.0)
    assert refs.cheap_quality == pytest.approx(1 / 3)
    assert refs.as_dict(IDS)["ref_model"] == "big"


def test_reference_tie_goes_to_cheaper():
    q = np.array([[1.0, 1.0, 0.0]])
    c = np.array([[5.0, 3.0, 1.0]])
    r = M.reference_and_cheapest(q, c)
    assert (r.ref_idx, r.cheap_idx) == (1, 2)


def test_saving_at_parity_hand_case(oracle_points, refs):
    sp = M.saving_at_parity(oracle_points, refs.ref_cost, refs.ref_quality)
    assert sp["reached"] is True
    assert sp["saving"] == pytest.approx(0.3)  # 1 - 7 / 10
    assert sp["cost_at_parity"] == pytest.approx(7.0)


def test_saving_at_parity_takes_cheapest_point_reaching_parity_with_tolerance():
    pts = np.array([[2.0, 0.5], [4.0, 0.8 - 1e-12], [6.0, 0.9], [8.0, 0.8]])
    sp = M.saving_at_parity(pts, c_ref=10.0, q_ref=0.8)
    assert sp["saving"] == pytest.approx(0.6)  # 1 - 4/10: float noise below Q_ref still counts


def test_saving_at_parity_not_reached_reports_max_quality():
    sp = M.saving_at_parity(np.array([[2.0, 0.5], [5.0, 0.9]]), c_ref=10.0, q_ref=1.0)
    assert sp == {"reached": False, "saving": None, "cost_at_parity": None, "max_quality": 0.9}


def test_saving_at_parity_with_mixing_interpolates_hull():
    pts = np.array([[0.0, 0.0], [2.0, 1.0], [1.0, 0.2]])
    assert M.hull_cost_at_quality(pts, 0.5) == pytest.approx(1.0)
    sp = M.saving_at_parity(pts, c_ref=4.0, q_ref=0.5, mixing=True)
    assert sp["saving"] == pytest.approx(0.75)  # 1 - 1/4; the points alone need cost 2
    assert M.saving_at_parity(pts, 4.0, 0.5)["saving"] == pytest.approx(0.5)
    assert M.hull_cost_at_quality(pts, 1.5) is None


def test_upper_hull_drops_points_below_and_cuts_after_the_top():
    pts = np.array([[3.0, 0.9], [0.0, 0.0], [1.0, 0.2], [2.0, 1.0], [1.0, 0.1]])
    np.testing.assert_allclose(M.upper_hull(pts), [[0.0, 0.0], [2.0, 1.0]])


# ARQGC with unit refs (cheap = (0, 0), ref = (1, 1)) so raw points are already normalised.
UNIT = dict(c_cheap=0.0, q_cheap=0.0, c_ref=1.0, q_ref=1.0)


@pytest.mark.parametrize(
    "points, want",
    [
        ([[0, 0], [1, 1]], 0.5),  # random mix of cheapest and reference
        ([[0, 0], [1, 1], [0.5, 0.3], [0.8, 0.1]], 0.5),  # points below the diagonal change nothing
        ([[0, 0], [1 / 3, 1], [1, 1]], 5 / 6),  # dominating router
        ([[0, 0], [0.5, 1], [1, 0.2]], 0.75),  # dearer but worse point: flat, not falling
        ([[1 / 3, 1]], 2 / 3),  # left of the router's first point counts 0
        ([[-0.5, 0], [0.5, 1]], 0.875),  # hull starting below a = 0 is cut at 0 (g = 0.5)
        ([[0, 0], [2, 1]], 0.25),  # beyond a = 1 is cut: g(1) = 0.5
        ([[2, 1]], 0.0),  # never cheaper than the reference
        ([[0, 0], [1, 1.2]], 0.6),  # above the reference: above 0.5
        ([[0, -0.5], [1, 1]], 0.25),  # below the cheapest model's quality: negative g counts
    ],
)
def test_arqgc_unit(points, want):
    assert M.arqgc(np.array(points, dtype=float), **UNIT) == pytest.approx(want)


@pytest.mark.parametrize(
    "points, want",
    [
        ([[0, 0], [1, 1]], 0.0),  # the reference is bought only at a = 1: no mixing
        ([[0, 0], [0.5, 0.8], [1, 1]], 0.4),  # hull 0.65; steps 0.5 * 0 + 0.5 * 0.8
        ([[1 / 3, 1]], 2 / 3),  # one point: the same as the hull
        ([[0, 0], [0.5, 1], [1, 0.2]], 0.5),  # a dearer, worse point does not lower the step
        ([[-0.5, 0.5], [2, 1]], 0.5),  # below a = 0 counts from 0; beyond a = 1 is cut
        ([[0.6, 0.9], [0.2, 0.4]], 0.4 * 0.4 + 0.4 * 0.9),  # unsorted points
    ],
)
def test_arqgc_steps_unit(points, want):
    p = np.array(points, dtype=float)
    assert M.arqgc_steps(p, **UNIT) == pytest.approx(want)
    assert M.arqgc_steps(p, **UNIT) <= M.arqgc(p, **UNIT) + 1e-12  # the hull adds mixing to it


def test_arqgc_hand_case(oracle_points, refs):
    # a = (7-1)/9 = 2/3 at g = 1, from (0, 0): 0.5 * 2/3 + 1/3 = 2/3
    score = M.arqgc(
        oracle_points, refs.cheap_cost, refs.cheap_quality, refs.ref_cost, refs.ref_quality
    )
    assert score == pytest.approx(2 / 3)


def test_arqgc_random_mix_of_real_models_is_half(refs):
    single = M.single_model_points(TRUE_Q, TRUE_C)
    score = M.arqgc(single, refs.cheap_cost, refs.cheap_quality, refs.ref_cost, refs.ref_quality)
    assert score == pytest.approx(0.5)


def test_arqgc_undefined_when_reference_is_cheapest():
    assert math.isnan(M.arqgc(np.array([[1.0, 1.0]]), 1.0, 1.0, 1.0, 1.0))


def test_quality_at_cost(oracle_points):
    assert M.quality_at_cost(oracle_points, 10.0) == 1.0
    assert M.quality_at_cost(oracle_points, 7.0) == 1.0
    assert M.quality_at_cost(oracle_points, 5.0) == pytest.approx(1 / 3)
    assert M.quality_at_cost(oracle_points, 0.5) is None


def test_top1_accuracy_with_ties():
    pred = np.array([[0.9, 0.9, 0.1], [0.2, 0.8, 0.5], [0.3, 0.1, 0.6], [0.1, 0.9, 0.2]])
    true = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 1, 0]], dtype=float)
    # row 0: tied prediction -> first index 0, not among best {1, 2}: miss; row 1: 1 not in {0, 2}:
    # miss; row 2: all tied best: hit; row 3: hit
    assert M.top1_accuracy(pred, true) == 0.5


def test_ece_hand_example():
    pred = np.array([0.05, 0.15, 0.15, 0.95])
    true = np.array([0.0, 1.0, 0.0, 1.0])
    # bins 0, 1, 1, 9: 1/4 * 0.05 + 2/4 * |0.15 - 0.5| + 1/4 * 0.05 = 0.2
    assert M.ece(pred, true) == pytest.approx(0.2)
    assert M.ece(np.array([0.5, 0.5]), np.array([0.0, 1.0])) == 0.0
    # 1.0 falls in the last bin with 0.95
    assert M.ece(np.array([0.95, 1.0]), np.array([1.0, 1.0])) == pytest.approx(0.025)
    # 2 bins: 0.3 and 0.4 share bin 0 -> |0.35 - 0.5| = 0.15
    assert M.ece(np.array([0.3, 0.4]), np.array([0.0, 1.0]), bins=2) == pytest.approx(0.15)


def test_calibration_per_model_and_mean():
    pred = np.array([[0.05, 0.5], [0.15, 0.5], [0.15, 0.5], [0.95, 0.5]])
    true = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    cal = M.calibration(pred, true, ["x", "y"])
    assert cal["per_model"] == {"x": pytest.approx(0.2), "y": 0.0}
    assert cal["mean"] == pytest.approx(0.1)


def test_summarize_is_json_friendly(oracle_points, refs):
    s = M.summarize("oracle", oracle_points, refs)
    json.dumps(s)
    assert s["name"] == "oracle"
    assert len(s["points"]) == 101
    assert s["points"][50] == [0.5, pytest.approx(7.0), 1.0]
    assert s["saving_at_parity"]["saving"] == pytest.approx(0.3)
    assert s["arqgc"] == pytest.approx(2 / 3)
    assert s["quality_at_ref_cost"] == 1.0


def test_summarize_not_reached_and_single_point(refs):
    s = M.summarize("always-small", np.array([[1.0, 1 / 3]]), refs, taus=None)
    json.dumps(s)
    assert s["points"] == [[None, 1.0, pytest.approx(1 / 3)]]
    assert s["saving_at_parity"]["reached"] is False
    assert s["saving_at_parity"]["max_quality"] == pytest.approx(1 / 3)
    assert s["arqgc"] == 0.0  # a single point at a = 0: a flat line at g = 0


def test_fold_figures_measure_each_fold_against_its_own_reference():
    from ipr_model.evaluation.evaluate import fold_figures
    from ipr_model.training.datasets import Dataset, ModelInfo

    # fold 0 is TRUE_Q's three prompts; fold 1 three where "small" is the better model
    q = np.vstack([TRUE_Q, [[0.0, 1.0]] * 3])
    c = np.vstack([TRUE_C] * 2)
    ds = Dataset("hand", [ModelInfo(i, i, None, None) for i in IDS], [str(i) for i in range(6)],
                 ["t"] * 6, ["train"] * 6, ["p"] * 6, q, c)
    per = fold_figures(ds, np.array([0, 0, 0, 1, 1, 1]), c, {"oracle": q})
    assert len(per) == 2
    # fold 0: the reference is "big" (Q 1, C 10); the oracle matches it at C 7 (see above)
    assert per[0]["oracle"]["saving_at_parity"]["saving"] == pytest.approx(0.3)
    # fold 1: the reference is "small", also the cheapest: parity at its own cost, saving 0
    assert per[1]["oracle"]["saving_at_parity"]["saving"] == pytest.approx(0.0)


# A hand-made curve against c_ref = 10, q_ref = 0.8: targets 0.76, 0.78, 0.792 and 0.8.
CURVE = np.array([[1.0, 0.5], [3.0, 0.77], [4.0, 0.76], [5.0, 0.795], [8.0, 0.80], [12.0, 0.9]])


def test_cost_share_takes_the_cheapest_point_reaching_each_fraction():
    got = [M.cost_share(CURVE, 10.0, 0.8, f) for f in M.QUALITY_FRACTIONS]
    assert got == pytest.approx([0.3, 0.5, 0.5, 0.8])


def test_cost_share_at_parity_is_one_minus_the_saving_and_none_when_unreachable():
    sp = M.saving_at_parity(CURVE, 10.0, 0.8)
    assert M.cost_share(CURVE, 10.0, 0.8, 1.0) == pytest.approx(1.0 - sp["saving"])
    low = np.array([[1.0, 0.5], [2.0, 0.7]])
    assert M.cost_share(low, 10.0, 0.8, 0.95) is None  # 0.7 < 0.76
    assert M.cost_share(low, 10.0, 0.8, 0.875) == pytest.approx(0.2)  # 0.7 exactly, Q_TOL slack
    assert M.summarize("r", low, M.Refs(0, 10.0, 0.8, 1, 1.0, 0.5), taus=None)["cost_share"] == {
        "0.95": None, "0.975": None, "0.99": None, "1.0": None}


def test_cost_share_with_mixing_reads_the_hull():
    pts = np.array([[0.0, 0.0], [10.0, 1.0]])
    assert M.cost_share(pts, 10.0, 1.0, 0.95, mixing=True) == pytest.approx(0.95)
    assert M.cost_share(pts, 10.0, 1.0, 0.95) == pytest.approx(1.0)  # points only: the top one


def test_cost_share_rejects_a_fraction_outside_0_1():
    with pytest.raises(ValueError, match="fraction must be in"):
        M.cost_share(CURVE, 10.0, 0.8, 1.5)
