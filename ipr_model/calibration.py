"""Per-model calibration of predicted quality: isotonic regression, stored as knots.

Fitted on out-of-fold predictions (data the adapter member did not train on) and applied at
serving time with ``np.interp``, so it needs numpy only.
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


def fit_isotonic(raw: np.ndarray, target: np.ndarray, prior_weight: float = 20.0) -> Calibration:
    """Isotonic fit of target on raw, shrunk toward the mean by ``prior_weight`` pseudo-labels per
    knot, and compressed to at most ~64 knots."""
    raw, target = np.asarray(raw, float), np.asarray(target, float)
    order = np.argsort(raw, kind="stable")
    xs, ys = raw[order], target[order]
    ux, inv = np.unique(xs, return_inverse=True)
    sums = np.bincount(inv, weights=ys)
    cnt = np.bincount(inv).astype(float)
    mean = float(ys.mean())
    yfit = pava((sums + prior_weight * mean) / (cnt + prior_weight), cnt + prior_weight)
    # Keep the knots where the fitted value changes (both ends of each flat block).
    keep = np.ones(len(ux), dtype=bool)
    if len(ux) > 2:
        same_prev = np.r_[False, yfit[1:] == yfit[:-1]]
        same_next = np.r_[yfit[:-1] == yfit[1:], False]
        keep = ~(same_prev & same_next)
    x, y = ux[keep], np.clip(yfit[keep], 0.0, 1.0)
    if len(x) > 64:
        idx = np.unique(np.linspace(0, len(x) - 1, 64).round().astype(int))
        x, y = x[idx], y[idx]
    return Calibration(x, y)
