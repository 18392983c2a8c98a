"""Baseline scorers on tiny synthetic sets where the right answer is known."""

import numpy as np
import pytest

from ipr_model.evaluation import baselines as B
from ipr_model.evaluation.quality_cost import arqgc, reference_and_cheapest


def _unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clusters(rng, n_per, dim=8):
    """Two tight clusters around e0 and e1; model 0 is right on cluster 0, model 1 on cluster 1."""
    e = np.eye(dim, dtype=np.float32)
    a = _unit(e[0] + 0.05 * rng.standard_normal((n_per, dim)))
    b = _unit(e[1] + 0.05 * rng.standard_normal((n_per, dim)))
    q = np.concatenate([np.tile([1.0, 0.0], (n_per, 1)), np.tile([0.0, 1.0], (n_per, 1))])
    return np.concatenate([a, b]), q


def test_knn_neighbours_determine_quality():
    rng = np.random.default_rng(0)
    emb, q = _clusters(rng, 6)
    test = _unit([[1, 0.02, 0, 0, 0, 0, 0, 0], [0.03, 1, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(B.knn_quality(emb, q, test, k=5), [[1, 0], [0, 1]])
    # k = None picks k by leave-one-out; here every k in range (5) is exact
    np.testing.assert_allclose(B.knn_quality(emb, q, test), [[1, 0], [0, 1]])


def test_knn_mean_of_k_nearest_by_hand():
    # on the unit circle at angles 0, 10, 20, 90 degrees; the query at 4 degrees has as its two
    # nearest the ones at 0 and 10
    ang = np.deg2rad([0.0, 10.0, 20.0, 90.0])
    emb = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    q = np.array([[0.2], [0.6], [1.0], [0.0]])
    test = np.array([[np.cos(np.deg2rad(4)), np.sin(np.deg2rad(4))]])
    assert B.knn_quality(emb, q, test, k=2)[0, 0] == pytest.approx(0.4)
    assert B.knn_quality(emb, q, test, k=3)[0, 0] == pytest.approx(0.6)
    assert B.knn_quality(emb, q, test, k=99)[0, 0] == pytest.approx(0.45)  # capped at n_train


def test_select_knn_k_prefers_local_when_quality_is_local():
    rng = np.random.default_rng(1)
    emb, q = _clusters(rng, 30)
    # with 60 prompts in two pure clusters, k >= 30 starts mixing the other cluster in
    assert B.select_knn_k(emb, q, grid=(5, 10, 50)) in (5, 10)


def test_linear_logistic_learns_and_handles_constant_models():
    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((200, 6)))
    y = np.stack(
        [(x[:, 0] > 0).astype(float), np.ones(200), np.zeros(200)], axis=1
    )  # model 1 always right, model 2 always wrong
    xt = _unit(rng.standard_normal((100, 6)))
    pred = B.linear_quality(x, y, xt)  # auto -> logistic (binary labels)
    assert ((pred[:, 0] > 0.5) == (xt[:, 0] > 0)).mean() > 0.9
    assert np.all(pred[:, 1] == 1.0) and np.all(pred[:, 2] == 0.0)
    assert pred.min() >= 0.0 and pred.max() <= 1.0


def test_linear_logistic_with_a_rare_class_does_not_fail():
    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((50, 4)))
    y = np.zeros((50, 1))
    y[:2, 0] = 1.0  # too few positives for 3-fold CV
    pred = B.linear_quality(x, y, x[:5])
    assert pred.shape == (5, 1) and np.all((pred >= 0) & (pred <= 1))


def test_linear_ridge_on_graded_labels():
    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((300, 5)))
    y = np.stack([0.5 + 0.3 * x[:, 0], np.full(300, 0.4), 0.5 + 2.0 * x[:, 1]], axis=1)
    xt = _unit(rng.standard_normal((50, 5)))
    pred = B.linear_quality(x, y, xt)  # auto -> ridge (graded labels)
    np.testing.assert_allclose(pred[:, 0], 0.5 + 0.3 * xt[:, 0], atol=0.05)
    assert np.all(pred[:, 1] == 0.4)
    assert pred[:, 2].min() >= 0.0 and pred[:, 2].max() <= 1.0  # clipped


def test_linear_rejects_bad_kind():
    x = np.eye(3)
    with pytest.raises(ValueError, match="kind"):
        B.linear_quality(x, np.ones((3, 1)), x, kind="svm")
    with pytest.raises(ValueError, match="logistic"):
        B.linear_quality(x, np.full((3, 1), 0.5), x, kind="logistic")


def test_oracle_is_a_copy_of_recorded_quality():
    q = np.array([[0.1, 0.9], [1.0, 0.0]])
    pred = B.oracle_quality(q)
    np.testing.assert_array_equal(pred, q)
    pred[0, 0] = 5.0
    assert q[0, 0] == 0.1


def test_single_model_points_and_fixed_baselines():
    q = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.5, 1.0]])
    c = np.array([[9.0, 1.0, 3.0], [12.0, 1.0, 3.0], [9.0, 1.0, 3.0]])
    np.testing.assert_allclose(
        B.single_model_points(q, c), [[10.0, 2.5 / 3], [1.0, 0.5], [3.0, 1 / 3]]
    )
    np.testing.assert_allclose(B.always_reference(q, c), [[10.0, 2.5 / 3]])
    np.testing.assert_allclose(B.always_cheapest(q, c), [[1.0, 0.5]])


def test_random_mix_is_the_hull_of_single_models():
    # cheapest (1, 0.5), reference (10, 0.9), a model above the chord (4, 0.8), one below (6, 0.6)
    q = np.array([[0.5, 0.9, 0.8, 0.6]])
    c = np.array([[1.0, 10.0, 4.0, 6.0]])
    mix = B.random_mix(q, c)
    np.testing.assert_allclose(mix["hull"], [[1, 0.5], [4, 0.8], [10, 0.9]])
    # normalised: (0,0), (1/3, 0.75), (1,1): 1/3 * 0.375 + 2/3 * 0.875 = 0.7083...
    assert mix["arqgc"] == pytest.approx(1 / 3 * 0.375 + 2 / 3 * 0.875)
    # reaching Q_ref by mixing needs all weight on the reference: saving 0, both ways
    assert mix["saving_at_parity"]["saving"] == pytest.approx(0.0)
    assert mix["saving_at_parity_pure"]["saving"] == pytest.approx(0.0)
    r = reference_and_cheapest(q, c)
    two = np.array([[r.cheap_cost, r.cheap_quality], [r.ref_cost, r.ref_quality]])
    score = arqgc(two, r.cheap_cost, r.cheap_quality, r.ref_cost, r.ref_quality)
    assert score == pytest.approx(0.5)


def test_linear_logistic_fixed_c_matches_cv_shape():
    rng = np.random.default_rng(3)
    x = _unit(rng.standard_normal((120, 4)))
    y = (x[:, :1] > 0).astype(float)
    fixed = B.linear_quality(x, y, x, c=1.0)
    tuned = B.linear_quality(x, y, x)
    assert fixed.shape == tuned.shape == (120, 1)
    # a larger (CV-chosen) C fits this separable problem more sharply than C = 1
    assert np.abs(tuned - y).mean() < np.abs(fixed - y).mean()
