"""The trainer's blend selection: the (part weights, shrink) pair whose out-of-sample routing of
the train split has the largest area without mixing (``arqgc_steps``), not the largest hull."""

from types import SimpleNamespace

import numpy as np
import pytest

from ipr_model.evaluation import quality_cost as metrics
from ipr_model.training.fitting import PART_WEIGHTS
from ipr_model.training.train import SHRINK_GRID, Blend, calibrate, select_blend


def _areas(oof, est, q, c, ids):
    refs = metrics.reference_and_cheapest(q, c)
    norm = (refs.cheap_cost, refs.cheap_quality, refs.ref_cost, refs.ref_quality)
    mean, out = q.mean(axis=0), {}
    for parts in PART_WEIGHTS:
        raw = oof @ np.asarray(parts)
        cal = np.stack([f(raw[:, j]) for j, f in enumerate(calibrate(raw, q))], axis=1)
        for w in SHRINK_GRID:
            pts = metrics.operating_points(mean + w * (cal - mean), est, q, c, ids)
            out[Blend(parts, w)] = (metrics.arqgc(pts, *norm), metrics.arqgc_steps(pts, *norm))
    return out


def test_select_blend_takes_the_largest_steps_area_not_the_largest_hull():
    # Six models of rising mean quality and cost, four parts of unequal noise (a case where the
    # two criteria disagree, on both the part weights and the shrink).
    rng = np.random.default_rng(3)
    n, m = 300, 6
    skill = np.clip(np.linspace(0.5, 0.8, m) + rng.normal(0.0, 0.15, (n, m)), 0.0, 1.0)
    q = (rng.random((n, m)) < skill).astype(float)
    oof = np.clip(skill[..., None] + rng.normal(0.0, [0.2, 0.4, 0.6, 0.8], (n, m, 4)), 0.0, 1.0)
    cost = np.geomspace(1.0, 30.0, m) * (1.0 + 0.2 * rng.random((n, m)))
    ids = [f"model-{j}" for j in range(m)]
    areas = _areas(oof, cost, q, cost, ids)
    by_hull = max(areas, key=lambda b: areas[b][0])
    by_steps = max(areas, key=lambda b: areas[b][1])
    assert by_hull != by_steps
    chosen, score = select_blend(
        oof, cost, SimpleNamespace(quality=q, cost=cost), ids, list(range(m))
    )
    assert chosen == by_steps and score == pytest.approx(areas[by_steps][1])


def test_blends_before_the_joint_part_read_as_four_parts():
    # Manifests and adapters written before the joint part carry three weights.
    assert Blend.from_manifest({"part_weights": [0.5, 0.5, 0.0]}).parts == (0.5, 0.5, 0.0, 0.0)
    assert Blend.from_manifest({}).parts[3] == 0.0
    assert all(len(p) == 4 and abs(sum(p) - 1.0) < 1e-9 for p in PART_WEIGHTS)
