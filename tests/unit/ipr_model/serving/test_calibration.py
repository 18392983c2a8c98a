"""Calibration: Platt scaling recovers a known logistic map and never reverses a ranking; the
form follows the labels (binary: Platt, graded: isotonic); both survive JSON."""

import numpy as np
import pytest

from ipr_model.serving.calibration import (
    Calibration,
    Calibrations,
    fit_calibration,
    fit_platt,
    shrink,
)


def _logit(p):
    return np.log(p / (1 - p))


def test_platt_recovers_the_map_that_made_soft_labels():
    raw = np.linspace(0.05, 0.95, 200)
    target = 1 / (1 + np.exp(-(2.0 * _logit(raw) - 0.5)))  # graded quality, exactly logistic
    cal = fit_platt(raw, target)
    probe = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    expected = 1 / (1 + np.exp(-(2.0 * _logit(probe) - 0.5)))
    np.testing.assert_allclose(cal(probe), expected, atol=1e-3)


def test_platt_on_binary_labels_keeps_order_and_mean():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.2, 0.9, 2000)
    y = (rng.uniform(size=2000) < raw**2).astype(float)
    cal = fit_platt(raw, y)
    out = cal(np.sort(raw))
    assert np.all(np.diff(out) > 0)  # strictly increasing: no ties between prompts
    assert abs(cal(raw).mean() - y.mean()) < 1e-3  # logistic fits reproduce the mean


def test_backwards_signal_gives_the_mean_not_a_reversed_ranking():
    raw = np.linspace(0.1, 0.9, 100)
    y = (raw < 0.5).astype(float)
    cal = fit_platt(raw, y)
    np.testing.assert_allclose(cal(raw), y.mean(), atol=1e-6)


def test_binary_labels_get_platt_and_graded_labels_isotonic():
    raw = np.linspace(0.1, 0.9, 50)
    assert fit_calibration(raw, (raw > 0.5).astype(float)).kind == "platt"
    graded = fit_calibration(raw, np.clip(raw + 0.05, 0, 1))
    assert graded.kind == "isotonic"
    assert np.all(np.diff(graded.y) >= 0)


@pytest.mark.parametrize("target", [np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.1, 0.2, 0.6, 0.9])])
def test_round_trip_and_shrink(target):
    cal = fit_calibration(np.array([0.2, 0.4, 0.6, 0.8]), target)
    back = Calibration.from_dict(cal.to_dict())
    assert back.kind == cal.kind
    np.testing.assert_array_equal(back(np.array([0.3, 0.7])), cal(np.array([0.3, 0.7])))
    half = shrink(cal, 0.5, 0.5)
    assert half.kind == cal.kind
    np.testing.assert_allclose(half(np.array([0.7])) - 0.5, (cal(np.array([0.7])) - 0.5) / 2)
    with pytest.raises(ValueError, match="calibration kind must be one of"):
        Calibration.from_dict({"kind": "spline", "x": [0, 1], "y": [0, 1]})


def test_stacked_calibrations_give_each_columns_interp_values():
    rng = np.random.default_rng(0)
    fitted = fit_calibration(rng.uniform(size=300), (rng.uniform(size=300) < 0.6).astype(float))
    tied = Calibration(np.array([0.2, 0.2, 0.5, 0.5, 0.7]), np.array([0.1, 0.3, 0.4, 0.6, 0.9]))
    one_knot = Calibration(np.array([0.4]), np.array([0.7]))
    cals = [fitted, Calibration.identity(), tied, one_knot]
    raw = rng.uniform(-0.3, 1.3, (400, len(cals)))
    raw[:5] = np.stack([np.resize(c.x, 5) for c in cals], axis=1)  # on the knots, ties too
    each = np.stack([c(raw[:, j]) for j, c in enumerate(cals)], axis=1)
    np.testing.assert_allclose(Calibrations(cals)(raw), each, atol=1e-12)
    assert len(fitted.x) > 5 and each[:, 1].min() == 0.0 and np.all(each[:, 3] == 0.7)
