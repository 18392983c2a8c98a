"""Local corrections from feedback: a label moves the estimates near it, by the documented amount,
and nothing beyond its radius."""

import numpy as np
import pytest

from ipr_model.serving.adapters import unit
from ipr_model.serving.corrections import Correction


def _at_cosine(base: np.ndarray, other: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector at cosine ``cos`` from unit ``base``, in the plane of ``base`` and
    ``other``."""
    ortho = unit((other - (other @ base) * base)[None])[0]
    return cos * base + np.sqrt(1.0 - cos**2) * ortho


def test_a_repeat_of_a_label_moves_by_one_over_strength_plus_one_and_far_prompts_stay():
    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=(2, 16)))
    fix = Correction.fit(np.array([0.8]), a[None], np.array([0.0]), radius=0.4, strength=3.0,
                         band=0.0)
    near = _at_cosine(a, b, 0.7)  # weight (0.7 - 0.4) / 0.6 = 0.5
    far = _at_cosine(a, b, 0.39)
    q = np.array([0.8, 0.6, 0.6])
    out = fix(q, np.stack([a, near, far]))
    np.testing.assert_allclose(out, [0.8 - 0.8 / 4.0, 0.6 - 0.8 * 0.5 / 3.5, 0.6], atol=1e-3)


def test_labels_that_agree_with_the_estimate_change_nothing_and_output_stays_in_0_1():
    rng = np.random.default_rng(1)
    x = unit(rng.normal(size=(20, 8)))
    est = rng.random(20)
    agree = Correction.fit(est, x, est)
    np.testing.assert_allclose(agree(est, x), est, atol=1e-6)
    up = Correction.fit(np.zeros(20), x, np.ones(20), strength=0.01, band=0.0)
    assert np.all(up(np.full(20, 0.9), x) <= 1.0) and up(np.full(20, 0.9), x).min() > 0.99


def test_saved_and_loaded_it_corrects_alike(tmp_path):
    rng = np.random.default_rng(2)
    x = unit(rng.normal(size=(30, 8)))
    fix = Correction.fit(rng.random(30), x, (rng.random(30) > 0.5).astype(float),
                         rng.random(30) + 0.01, radius=0.3, strength=2.0, band=0.25)
    fix.save(tmp_path / "feedback.npz")
    back = Correction.load(tmp_path / "feedback.npz")
    assert (back.radius, back.strength, back.band) == pytest.approx((0.3, 2.0, 0.25))
    q = rng.random(30)
    np.testing.assert_allclose(back(q, x), fix(q, x), atol=1e-3)  # float16 embeddings


@pytest.mark.parametrize("radius,strength", [(1.0, 3.0), (-0.1, 3.0), (0.4, 0.0)])
def test_a_bad_radius_or_strength_is_refused(radius, strength):
    with pytest.raises(ValueError, match="radius"):
        Correction.fit(np.zeros(1), np.ones((1, 4)), np.zeros(1), radius=radius, strength=strength)


def test_a_label_weighs_its_weight_and_weights_outside_0_1_are_refused():
    x = unit(np.eye(2, 8))
    fix = Correction.fit(np.array([0.8, 0.8]), x, np.zeros(2), np.array([0.5, 1.0]), strength=1.0,
                         band=0.0)
    # each prompt is the other's orthogonal: only its own label reaches it
    np.testing.assert_allclose(
        fix(np.array([0.8, 0.8]), x), [0.8 - 0.8 * 0.5 / 1.5, 0.4], atol=1e-3
    )
    for bad in (np.array([0.0, 1.0]), np.array([1.5, 1.0]), np.ones(3)):
        with pytest.raises(ValueError, match="weight"):
            Correction.fit(np.zeros(2), x, np.zeros(2), bad)


def test_only_the_shift_beyond_the_band_moves_an_estimate():
    """band 0.5 at q = 0.8: shifts within 0.5 * sqrt(0.8 * 0.2) = 0.2 are the estimator's error."""
    x = unit(np.eye(3, 8))
    # one label per prompt, each reaching only itself: shift = r / 2 (strength 1)
    fix = Correction.fit(np.full(3, 0.8), x, np.array([0.5, 0.0, 1.0]), band=0.5)
    out = fix(np.full(3, 0.8), x)
    # -0.15 is inside the band; -0.4 moves by 0.2; +0.1 is inside the band
    np.testing.assert_allclose(out, [0.8, 0.6, 0.8], atol=1e-3)


def test_a_file_saved_without_a_band_loads_with_band_0(tmp_path):
    x = unit(np.eye(2, 8))
    np.savez(tmp_path / "feedback.npz", emb=x.astype(np.float16),
             residual=np.array([-0.8, 0.0], np.float32), weight=np.ones(2, np.float32),
             radius=np.float32(0.4), strength=np.float32(1.0))
    back = Correction.load(tmp_path / "feedback.npz")
    assert back.band == 0.0
    np.testing.assert_allclose(back(np.array([0.8, 0.8]), x), [0.4, 0.8], atol=1e-3)
