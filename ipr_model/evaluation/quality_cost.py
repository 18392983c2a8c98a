"""How routing quality is measured (docs/design.md, "How routing quality is measured"). Pure numpy.

A router is described by its operating points: for each tolerance tau on ``TAU_GRID`` every prompt
is routed with :func:`ipr_model.serving.rule.route_batch` on the *predicted* quality and the
*estimated*
cost, and the chosen models' *recorded* cost and quality are averaged: one (C, Q) per tau.

- :func:`operating_points`: the [len(taus), 2] array of (C, Q).
- :func:`reference_and_cheapest`: the reference (highest mean recorded quality) and the cheapest
  (lowest mean recorded cost) single models.
- :func:`saving_at_parity`: 1 - min{C : Q >= Q_ref} / C_ref, or "not reached" with max Q.
- :func:`cost_share`: min{C : Q >= f * Q_ref} / C_ref for f in ``QUALITY_FRACTIONS`` (None: never).
- :func:`arqgc`: area under the normalised, upper non-decreasing hull (see its docstring).
- :func:`arqgc_steps`: the same area without mixing: the curve a user gets from one tau.
- :func:`quality_at_cost`: max Q with C <= a budget (the reference cost).
- :func:`top1_accuracy`, :func:`ece`, :func:`calibration`: the estimator's own quality.
- :func:`summarize`: one JSON-friendly dict per router.

Points arrays are always ``[k, 2]`` with columns (cost, quality).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ipr_model.serving.rule import Variant, route_batch

TAU_GRID = np.linspace(0.0, 1.0, 101)
Q_TOL = 1e-9  # absolute slack on "Q >= Q_ref" for float noise in means
C_RTOL = 1e-9  # relative slack on "C <= budget" for float noise in means
QUALITY_FRACTIONS = (0.95, 0.975, 0.99, 1.0)  # cost share at these fractions of Q_ref


def _points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1 and p.shape == (2,):
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
        raise ValueError(
            f"points must be a non-empty [k, 2] array of (cost, quality), got {p.shape}"
        )
    if not np.isfinite(p).all():
        raise ValueError("points must be finite")
    return p


def operating_points(
    pred_q: np.ndarray,
    est_cost: np.ndarray,
    true_q: np.ndarray,
    true_cost: np.ndarray,
    model_ids: Sequence[str],
    taus: np.ndarray = TAU_GRID,
    variant: Variant = "ipr",
    delta: float = 0.0,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """(mean recorded cost, mean recorded quality) of the chosen models, one row per tau.

    Routing reads only ``pred_q`` and ``est_cost``; ``true_q`` and ``true_cost`` only measure.
    """
    tq = np.asarray(true_q, dtype=np.float64)
    tc = np.asarray(true_cost, dtype=np.float64)
    if tq.shape != np.shape(pred_q) or tc.shape != tq.shape or np.shape(est_cost) != tq.shape:
        raise ValueError(
            "pred_q, est_cost, true_q and true_cost must share one [n, m] shape, got "
            f"{np.shape(pred_q)}, {np.shape(est_cost)}, {tq.shape}, {tc.shape}"
        )
    rows = np.arange(tq.shape[0])
    out = np.empty((len(taus), 2), dtype=np.float64)
    for i, tau in enumerate(np.asarray(taus, dtype=np.float64)):
        idx, _ = route_batch(pred_q, est_cost, tau, model_ids, allowed, variant, delta)
        out[i] = tc[rows, idx].mean(), tq[rows, idx].mean()
    return out


@dataclass(frozen=True)
class Refs:
    """The reference and the cheapest single model of a split, by recorded means."""

    ref_idx: int
    ref_cost: float
    ref_quality: float
    cheap_idx: int
    cheap_cost: float
    cheap_quality: float

    def as_dict(self, model_ids: Sequence[str] | None = None) -> dict:
        d = asdict(self)
        if model_ids is not None:
            d["ref_model"] = model_ids[self.ref_idx]
            d["cheap_model"] = model_ids[self.cheap_idx]
        return d


def single_model_points(true_q: np.ndarray, true_cost: np.ndarray) -> np.ndarray:
    """[m, 2]: (mean recorded cost, mean recorded quality) of always sending to each model."""
    cost = np.asarray(true_cost, dtype=np.float64).mean(axis=0)
    quality = np.asarray(true_q, dtype=np.float64).mean(axis=0)
    return np.stack([cost, quality], axis=1)


def reference_and_cheapest(true_q: np.ndarray, true_cost: np.ndarray) -> Refs:
    """Reference: highest mean recorded quality (ties: the cheaper, then the lower index).
    Cheapest: lowest mean recorded cost (ties: the better, then the lower index)."""
    pts = single_model_points(true_q, true_cost)
    c, q = pts[:, 0], pts[:, 1]
    ref = int(np.lexsort((c, -q))[0])
    cheap = int(np.lexsort((-q, c))[0])
    return Refs(ref, float(c[ref]), float(q[ref]), cheap, float(c[cheap]), float(q[cheap]))


def upper_hull(points: np.ndarray) -> np.ndarray:
    """Vertices of the upper non-decreasing hull of ``points`` (sorted by cost).

    Random mixing of two operating points reaches every point of the segment between them, and a
    point of higher cost is worth at least the best cheaper one; so the achievable frontier is the
    concave upper hull, cut at its highest vertex (flat beyond it). Its first vertex is the
    cheapest point (the best of equally cheap ones); the curve is undefined left of it.
    """
    p = _points(points)
    order = np.lexsort((-p[:, 1], p[:, 0]))  # by cost, then best quality first
    p = p[order]
    _, first = np.unique(p[:, 0], return_index=True)  # keep the best point per cost
    p = p[first]
    # Only points better than every cheaper one can be vertices of the rising part (any other lies
    # below it); dropping the rest first changes nothing and keeps the loop short.
    prior = np.concatenate([[-np.inf], np.maximum.accumulate(p[:-1, 1])])
    hull: list[tuple[float, float]] = []
    for x, y in p[p[:, 1] > prior].tolist():  # Andrew's monotone chain, upper part
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle vertex unless it lies strictly above the chord to (x, y)
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append((x, y))
    return np.asarray(hull)  # rising throughout: its last vertex is the highest (the cut)


def hull_cost_at_quality(points: np.ndarray, quality: float) -> float | None:
    """Lowest cost at which random mixing of ``points`` reaches ``quality`` (None: never)."""
    h = upper_hull(points)
    if h[-1, 1] < quality - Q_TOL:
        return None
    if h[0, 1] >= quality - Q_TOL:
        return float(h[0, 0])
    j = int(np.argmax(h[:, 1] >= quality - Q_TOL))  # first vertex at or above; h[j-1] is below
    (x0, y0), (x1, y1) = h[j - 1], h[j]
    return float(x0 + (x1 - x0) * (quality - y0) / (y1 - y0))


def saving_at_parity(
    points: np.ndarray, c_ref: float, q_ref: float, mixing: bool = False
) -> dict:
    """Cost saving at quality parity: 1 - min{C : Q >= Q_ref} / C_ref.

    ``Q >= Q_ref`` allows ``Q_TOL`` of float noise. With ``mixing=True`` the minimum is taken over
    the upper hull (random mixing of points allowed) instead of the points themselves; DESIGN's
    figure for routers is ``mixing=False``. Returns ``reached``, ``saving`` (None when not reached),
    ``cost_at_parity`` (None when not reached) and ``max_quality`` (max Q of the points).
    """
    p = _points(points)
    max_q = float(p[:, 1].max())
    if mixing:
        cost = hull_cost_at_quality(p, q_ref)
    else:
        ok = p[:, 1] >= q_ref - Q_TOL
        cost = float(p[ok, 0].min()) if ok.any() else None
    if cost is None:
        return {"reached": False, "saving": None, "cost_at_parity": None, "max_quality": max_q}
    return {
        "reached": True,
        "saving": float(1.0 - cost / c_ref),
        "cost_at_parity": cost,
        "max_quality": max_q,
    }


def cost_share(
    points: np.ndarray, c_ref: float, q_ref: float, fraction: float, mixing: bool = False
) -> float | None:
    """Cost share needed to reach ``fraction`` of the reference quality:
    min{C : Q >= fraction * Q_ref} / C_ref, None when no point gets there.

    Over the router's own operating points, not their hull (``mixing=False``, the default): that is
    what a user who sets one tau gets, and it makes ``cost_share(.., 1.0) == 1 - saving`` of
    :func:`saving_at_parity` exactly (DESIGN's figure is also over the points). The hull would
    credit routing each prompt with one of two taus at random; ``mixing=True`` allows it (for the
    random mix of single models, which is mixing by definition). ``Q >= ...`` allows ``Q_TOL``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not c_ref > 0:
        raise ValueError(f"c_ref must be > 0, got {c_ref}")
    p = _points(points)
    target = fraction * q_ref
    if mixing:
        cost = hull_cost_at_quality(p, target)
    else:
        ok = p[:, 1] >= target - Q_TOL
        cost = float(p[ok, 0].min()) if ok.any() else None
    return None if cost is None else float(cost / c_ref)


def arqgc(points: np.ndarray, c_cheap: float, q_cheap: float, c_ref: float, q_ref: float) -> float:
    """Area under the routed quality-cost curve, normalised (docs/design.md).

    a = (C - C_cheap) / (C_ref - C_cheap), g = (Q - Q_cheap) / (Q_ref - Q_cheap); take the upper
    non-decreasing hull of the router's points (:func:`upper_hull`), extend it flat beyond its last
    vertex, and integrate g over a in [0, 1].

    Left of the router's cheapest point (a < a0) the router cannot operate, so that stretch adds
    nothing (g counts as 0 there); nothing is mixed in that is not one of the router's own points.
    Consequences: the random mix of the cheapest and the reference model, points (0, 0) and (1, 1),
    is the diagonal and scores exactly 0.5; a router whose points dominate it scores more; a hull
    that starts at a < 0 (cheaper than the cheapest model) is cut at a = 0; g may be negative or
    exceed 1, so the score may too. Returns NaN when the normalisation is undefined
    (C_ref == C_cheap or Q_ref == Q_cheap, e.g. the reference is also the cheapest model).
    """
    p = _points(points)
    da, dg = c_ref - c_cheap, q_ref - q_cheap
    if da == 0 or dg == 0:
        return float("nan")
    norm = np.stack([(p[:, 0] - c_cheap) / da, (p[:, 1] - q_cheap) / dg], axis=1)
    h = upper_hull(norm)
    lo = max(0.0, float(h[0, 0]))
    if lo >= 1.0:
        return 0.0
    inner = h[(h[:, 0] > lo) & (h[:, 0] < 1.0), 0]
    xs = np.concatenate([[lo], inner, [1.0]])
    ys = np.interp(xs, h[:, 0], h[:, 1])  # flat beyond the last vertex
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def arqgc_steps(
    points: np.ndarray, c_cheap: float, q_cheap: float, c_ref: float, q_ref: float
) -> float:
    """ARQGC without mixing: the same normalisation and integral over a in [0, 1], of the step
    curve g(a) = max{g_i : a_i <= a} of the router's own points (0 left of its cheapest point).

    This is what a user who sets one tau can get (a budget a buys the best point that fits it);
    :func:`arqgc` also credits the straight line between two points, reachable only by routing
    each prompt with one of two taus at random. A router whose decisions all move at the same
    tau has few points: its hull can be large while its steps are coarse. NaN as for
    :func:`arqgc`.
    """
    p = _points(points)
    da, dg = c_ref - c_cheap, q_ref - q_cheap
    if da == 0 or dg == 0:
        return float("nan")
    order = np.argsort(p[:, 0], kind="stable")
    a = (p[order, 0] - c_cheap) / da
    g = np.maximum.accumulate((p[order, 1] - q_cheap) / dg)
    widths = np.diff(np.clip(np.append(a, 1.0), 0.0, 1.0))
    return float(np.sum(widths * g))


def quality_at_cost(points: np.ndarray, budget: float) -> float | None:
    """max Q over points with C <= budget (relative slack ``C_RTOL``); None when none fits."""
    p = _points(points)
    ok = p[:, 0] <= budget + C_RTOL * abs(budget)
    return float(p[ok, 1].max()) if ok.any() else None


def top1_accuracy(pred_q: np.ndarray, true_q: np.ndarray) -> float:
    """Share of prompts whose argmax of ``pred_q`` (first index on ties) is one of the models with
    the highest recorded quality (all tied best models count)."""
    pq = np.asarray(pred_q, dtype=np.float64)
    tq = np.asarray(true_q, dtype=np.float64)
    if pq.shape != tq.shape or pq.ndim != 2:
        raise ValueError(
            f"pred_q and true_q must share one [n, m] shape, got {pq.shape}, {tq.shape}"
        )
    top = pq.argmax(axis=1)
    best = tq >= tq.max(axis=1, keepdims=True) - 1e-12
    return float(best[np.arange(len(tq)), top].mean())


def ece(pred: np.ndarray, true: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of one model: equal-width bins of ``pred`` over [0, 1] (the last
    bin includes 1.0), each weighted by its share of samples, |mean pred - mean true| per bin."""
    p = np.clip(np.asarray(pred, dtype=np.float64).ravel(), 0.0, 1.0)
    t = np.asarray(true, dtype=np.float64).ravel()
    if p.shape != t.shape or len(p) == 0:
        raise ValueError(
            f"pred and true must be non-empty and the same length, got {p.shape}, {t.shape}"
        )
    b = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, p, bins) - np.bincount(b, t, bins))  # = count * |mean p - mean t|
    return float(gap.sum() / len(p)) if count.sum() else 0.0


def calibration(
    pred_q: np.ndarray, true_q: np.ndarray, model_ids: Sequence[str], bins: int = 10
) -> dict:
    """``{"per_model": {model id: ECE}, "mean": mean ECE over models}``."""
    pq, tq = np.asarray(pred_q), np.asarray(true_q)
    per = {mid: ece(pq[:, j], tq[:, j], bins) for j, mid in enumerate(model_ids)}
    return {"per_model": per, "mean": float(np.mean(list(per.values())))}


def summarize(
    name: str, points: np.ndarray, refs: Refs, taus: np.ndarray | None = TAU_GRID
) -> dict:
    """One router as a JSON-friendly dict: points as [tau, C, Q] (tau None for a baseline without
    one), saving_at_parity (without mixing), arqgc, arqgc_steps, quality_at_ref_cost and
    cost_share (per fraction of Q_ref in ``QUALITY_FRACTIONS``, keyed like "0.975")."""
    p = _points(points)
    t = [None] * len(p) if taus is None else [float(x) for x in taus]
    if len(t) != len(p):
        raise ValueError(f"{len(t)} taus for {len(p)} points")
    norm = (refs.cheap_cost, refs.cheap_quality, refs.ref_cost, refs.ref_quality)
    score, steps = arqgc(p, *norm), arqgc_steps(p, *norm)
    return {
        "name": name,
        "points": [[tau, float(c), float(q)] for tau, (c, q) in zip(t, p, strict=True)],
        "saving_at_parity": saving_at_parity(p, refs.ref_cost, refs.ref_quality),
        "arqgc": None if np.isnan(score) else score,
        "arqgc_steps": None if np.isnan(steps) else steps,
        "quality_at_ref_cost": quality_at_cost(p, refs.ref_cost),
        "cost_share": {
            str(f): cost_share(p, refs.ref_cost, refs.ref_quality, f) for f in QUALITY_FRACTIONS
        },
    }
