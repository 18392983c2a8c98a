"""Per-model calibration of predicted quality: isotonic regression, stored as knots.

Fitted on out-of-sample predictions (data the adapter part did not train on; see adapters.py)
and applied at serving time with ``np.interp``, so it needs numpy only. ``shrink`` pulls a
calibration toward the model's mean quality by a weight the trainer chooses from out-of-sample
routing quality (train.py): with many candidate models, the best of their noisy estimates is
biased upward, and compressing every model's deviations from its mean counters that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    x: np.ndarray  # increasing knots (raw adapter output)
    y: np.ndarray  # calibrated quality at each knot, non-decreasing, in [0, 1]

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)

    def to_dict(self) -> dict:
        return {"kind": "isotonic", "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        if d.get("kind") != "isotonic":
            raise ValueError(f"calibration kind must be 'isotonic', got {d.get('kind')!r}")
        x, y = np.asarray(d["x"], float), np.asarray(d["y"], float)
        if x.ndim != 1 or x.shape != y.shape or len(x) < 1 or np.any(np.diff(x) < 0):
            raise ValueError("calibration knots must be two equal-length 1-d arrays, x increasing")
        return cls(x, y)

    @classmethod
    def identity(cls) -> "Calibration":
        return cls(np.array([0.0, 1.0]), np.array([0.0, 1.0]))


def pava(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing fit of y (already sorted by x) with weights w."""
    vals, wts, sizes = [], [], []
    for yi, wi in zip(y, w):
        vals.append(yi * wi)
        wts.append(wi)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] / wts[-2] > vals[-1] / wts[-1]:
            v, ww, s = vals.pop(), wts.pop(), sizes.pop()
            vals[-1] += v
            wts[-1] += ww
            sizes[-1] += s
    return np.repeat([v / w for v, w in zip(vals, wts)], sizes)


def fit_isotonic(raw: np.ndarray, target: np.ndarray, prior_weight: float = 5.0) -> Calibration:
    """Centred isotonic fit of target on raw, each block shrunk toward the mean.

    PAVA gives blocks of equal fitted value; each block's value gets ``prior_weight``
    pseudo-labels at the overall mean (a Beta prior: a small block at the top or bottom stays
    away from 0 and 1; large blocks barely move), PAVA runs again on the shrunk values, and the
    knots sit at the blocks' mean raw value, so the map is increasing between knots (ranking
    within a model is kept) and flat beyond the end knots. Compressed to at most ~64 knots."""
    raw, target = np.asarray(raw, float), np.asarray(target, float)
    order = np.argsort(raw, kind="stable")
    xs, ys = raw[order], target[order]
    ux, inv = np.unique(xs, return_inverse=True)
    sums = np.bincount(inv, weights=ys)
    cnt = np.bincount(inv).astype(float)
    yfit = pava(sums / cnt, cnt)
    block = np.cumsum(np.r_[True, yfit[1:] != yfit[:-1]]) - 1
    b_cnt = np.bincount(block, weights=cnt)
    b_sum = np.bincount(block, weights=sums)
    x = np.bincount(block, weights=ux * cnt) / b_cnt
    y = np.clip(pava((b_sum + prior_weight * ys.mean()) / (b_cnt + prior_weight), b_cnt + prior_weight), 0, 1)
    if len(x) > 64:
        idx = np.unique(np.linspace(0, len(x) - 1, 64).round().astype(int))
        x, y = x[idx], y[idx]
    return Calibration(x, y)


def shrink(cal: Calibration, mean: float, weight: float) -> Calibration:
    """``cal`` pulled toward ``mean``: mean + weight * (cal - mean), for weight in (0, 1]."""
    return Calibration(cal.x, mean + weight * (cal.y - mean))
