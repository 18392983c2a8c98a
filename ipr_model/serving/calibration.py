"""Per-model calibration of predicted quality, stored as knots.

``fit_calibration`` chooses the form from the recorded quality: Platt scaling (two parameters, the
logistic link of a binary outcome) when every label is 0 or 1, a centred isotonic fit when quality
is graded (task scores whose shape a logistic curve need not follow). Cross-validated over every
prompt, Platt scaling raised ARQGC on both binary datasets (docs/estimator-choice.md); on the
graded one the two tied. Fitted on out-of-sample predictions (data the adapter part did not train
on; see adapters.py) and applied at serving time with ``np.interp``, so it needs numpy only.
``Calibration.kind`` records which fit made it. ``shrink`` pulls a
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
    kind: str = "isotonic"  # how it was fitted (``FITS``)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        if d.get("kind") not in FITS:
            raise ValueError(
                f"calibration kind must be one of {sorted(FITS)}, got {d.get('kind')!r}"
            )
        x, y = np.asarray(d["x"], float), np.asarray(d["y"], float)
        if x.ndim != 1 or x.shape != y.shape or len(x) < 1 or np.any(np.diff(x) < 0):
            raise ValueError("calibration knots must be two equal-length 1-d arrays, x increasing")
        return cls(x, y, d["kind"])

    @classmethod
    def identity(cls) -> Calibration:
        return cls(np.array([0.0, 1.0]), np.array([0.0, 1.0]))


class Calibrations:
    """Several calibrations applied at once to raw predictions [n, M] (column j by the j-th),
    with ``np.interp``'s values: the knots padded to one length with their last one."""

    def __init__(self, calibrations: list[Calibration]):
        length = max(2, *(len(c.x) for c in calibrations))
        self.x = np.stack([np.pad(c.x, (0, length - len(c.x)), mode="edge") for c in calibrations])
        self.y = np.stack([np.pad(c.y, (0, length - len(c.y)), mode="edge") for c in calibrations])

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, float)
        above = (raw[:, :, None] >= self.x[None]).sum(axis=2)  # knots at or below each value
        hi = np.clip(above, 1, self.x.shape[1] - 1)[:, :, None]
        x0, x1 = (np.take_along_axis(self.x[None], i, axis=2)[..., 0] for i in (hi - 1, hi))
        y0, y1 = (np.take_along_axis(self.y[None], i, axis=2)[..., 0] for i in (hi - 1, hi))
        gap = x1 - x0
        t = np.clip((raw - x0) / np.where(gap > 0, gap, 1.0), 0.0, 1.0)
        return np.where(gap > 0, y0 + t * (y1 - y0), np.where(raw >= x1, y1, y0))


def pava(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing fit of y (already sorted by x) with weights w."""
    vals, wts, sizes = [], [], []
    for yi, wi in zip(y, w, strict=True):
        vals.append(yi * wi)
        wts.append(wi)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] / wts[-2] > vals[-1] / wts[-1]:
            v, ww, s = vals.pop(), wts.pop(), sizes.pop()
            vals[-1] += v
            wts[-1] += ww
            sizes[-1] += s
    return np.repeat([v / w for v, w in zip(vals, wts, strict=True)], sizes)


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
    shrunk = (b_sum + prior_weight * ys.mean()) / (b_cnt + prior_weight)
    y = np.clip(pava(shrunk, b_cnt + prior_weight), 0, 1)
    if len(x) > 64:
        idx = np.unique(np.linspace(0, len(x) - 1, 64).round().astype(int))
        x, y = x[idx], y[idx]
    return Calibration(x, y, "isotonic")


def fit_platt(raw: np.ndarray, target: np.ndarray, iters: int = 50) -> Calibration:
    """Platt scaling: q = sigmoid(a * logit(raw) + b), with a >= 0 so the map never reverses
    a model's ranking, fitted by Newton's method on the cross-entropy of the recorded quality
    (soft targets: graded quality works as is). Two parameters per model, so it needs far less
    data than an isotonic fit and keeps every difference between prompts. Stored as knots (raw
    in [0, 1]: evenly spaced in logit plus the quantiles of the fitted raw values) like any
    calibration."""
    raw, target = np.asarray(raw, float), np.clip(np.asarray(target, float), 0.0, 1.0)
    x = np.stack([_logit(raw), np.ones_like(raw)], axis=1)
    prior = np.array([1.0, 0.0])  # the identity map, held weakly: keeps separable data finite
    theta = prior.copy()
    for _ in range(iters):
        p = _sigmoid(x @ theta)
        hess = (x * (p * (1 - p))[:, None]).T @ x + _PRIOR * np.eye(2)
        step = np.linalg.solve(hess, x.T @ (p - target) + _PRIOR * (theta - prior))
        theta = theta - step
        if np.abs(step).max() < 1e-10:
            break
    if theta[0] < 0:  # raw ranks this model's quality backwards: predict its mean instead
        theta = np.array([0.0, float(_logit(target.mean()))])
    edge = np.log((1.0 - _EPS) / _EPS)  # logit of the clipped ends
    grid = _sigmoid(np.linspace(-edge, edge, 48))
    knots = np.unique(np.r_[0.0, grid, np.quantile(raw, np.linspace(0, 1, 64)), 1.0])
    return Calibration(knots, _sigmoid(theta[0] * _logit(knots) + theta[1]), "platt")


FITS = {"platt": fit_platt, "isotonic": fit_isotonic}


def fit_calibration(raw: np.ndarray, target: np.ndarray) -> Calibration:
    """Platt scaling for binary quality, isotonic for graded (see the module docstring)."""
    binary = np.isin(np.asarray(target, float), (0.0, 1.0)).all()
    return (fit_platt if binary else fit_isotonic)(raw, target)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


_EPS = 1e-4
_PRIOR = 1e-3


def shrink(cal: Calibration, mean: float, weight: float) -> Calibration:
    """``cal`` pulled toward ``mean``: mean + weight * (cal - mean), for weight in (0, 1]."""
    return Calibration(cal.x, mean + weight * (cal.y - mean), cal.kind)
