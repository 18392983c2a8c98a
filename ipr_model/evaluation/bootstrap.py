"""Intervals for the routing-quality figures: a paired bootstrap over prompts (docs/design.md,
"How routing quality is measured"). Pure numpy on top of :mod:`ipr_model.evaluation.quality_cost`.

Decisions are held fixed: each method's choice for every prompt at every operating point is
computed once (:func:`per_prompt`), as the recorded cost and quality of the chosen model
([k points, n prompts]). A resample draws n prompt indices with replacement; every method is
measured on the *same* draw (paired), as prompt-count weights ``w`` [B, n], so a resample's
operating points are ``w @ cost.T / n``: one matrix product per method, no re-routing.

The reference and the cheapest model keep their full-set identity in every resample (their means
are re-read on the resample): "95% of the reference's quality" names the same model throughout,
even where another model happens to score higher on a resample.

Figures per method (:func:`figures`): ``arqgc``, ``arqgc_steps``, ``saving_at_parity`` and
``cost_share_<f>`` for f in ``metrics.QUALITY_FRACTIONS``. A figure that is not reached (None) is
ranked as the worst value: -inf for the higher-is-better ones, +inf for the cost shares; an
interval end that falls on such a value is None ("not reached").
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ipr_model.evaluation import quality_cost as metrics
from ipr_model.evaluation.quality_cost import QUALITY_FRACTIONS, Refs
from ipr_model.serving.rule import Variant, route_batch

DEFAULT_RESAMPLES = 1000
LEVEL = 95.0  # central interval, percent
HIGHER_IS_BETTER = ("arqgc", "arqgc_steps", "saving_at_parity")
COST_SHARES = tuple(f"cost_share_{f}" for f in QUALITY_FRACTIONS)
FIGURES = (*HIGHER_IS_BETTER, *COST_SHARES)
COMPARED = ("arqgc", "cost_share_0.95")  # P(ipr beats a baseline) on these


@dataclass(frozen=True)
class PerPrompt:
    """One method's operating points before averaging: ``cost`` and ``quality`` [k, n] are the
    recorded values of the model chosen for each prompt at each point. ``mixing``: the method is
    a random mix of its points (its cost shares are read on their hull)."""

    cost: np.ndarray
    quality: np.ndarray
    mixing: bool = False

    def __post_init__(self) -> None:
        if self.cost.ndim != 2 or self.cost.shape != self.quality.shape:
            raise ValueError("cost and quality must share one [k points, n prompts] shape, got "
                             f"{self.cost.shape} and {self.quality.shape}")

    def points(self, w: np.ndarray | None = None) -> np.ndarray:
        """[k, 2] on the full set, or [B, k, 2] for prompt-count weights ``w`` [B, n]."""
        if w is None:
            return np.stack([self.cost.mean(axis=1), self.quality.mean(axis=1)], axis=1)
        n = self.cost.shape[1]
        return np.stack([w @ self.cost.T / n, w @ self.quality.T / n], axis=2)


def per_prompt(
    pred_q: np.ndarray, est_cost: np.ndarray, true_q: np.ndarray, true_cost: np.ndarray,
    model_ids: Sequence[str], taus: np.ndarray = metrics.TAU_GRID, variant: Variant = "ipr",
) -> PerPrompt:
    """Route every prompt once per tau (as :func:`metrics.operating_points` does) and keep the
    chosen model's recorded cost and quality per prompt."""
    tq, tc = np.asarray(true_q, dtype=np.float64), np.asarray(true_cost, dtype=np.float64)
    if tq.shape != np.shape(pred_q) or tc.shape != tq.shape or np.shape(est_cost) != tq.shape:
        raise ValueError("pred_q, est_cost, true_q and true_cost must share one [n, m] shape, "
                         f"got {np.shape(pred_q)}, {np.shape(est_cost)}, {tq.shape}, {tc.shape}")
    rows = np.arange(tq.shape[0])
    idx = np.stack([route_batch(pred_q, est_cost, t, model_ids, None, variant)[0] for t in taus])
    return PerPrompt(cost=tc[rows, idx], quality=tq[rows, idx])


def single_models(true_q: np.ndarray, true_cost: np.ndarray) -> PerPrompt:
    """The random mix of single models: one point per model, mixing allowed."""
    return PerPrompt(cost=np.asarray(true_cost, dtype=np.float64).T.copy(),
                     quality=np.asarray(true_q, dtype=np.float64).T.copy(), mixing=True)


def resample_indices(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, n] prompt indices drawn with replacement, seeded."""
    if n < 1 or resamples < 1:
        raise ValueError(f"need n >= 1 prompts and resamples >= 1, got {n} and {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def weights(indices: np.ndarray, n: int) -> np.ndarray:
    """[B, n] float counts: how often each prompt is drawn in each resample."""
    b = len(indices)
    flat = (np.arange(b)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def figures(points: np.ndarray, refs: Refs, mixing: bool = False) -> dict[str, float | None]:
    """Every figure of one set of operating points [k, 2], None where not reached/undefined."""
    norm = (refs.cheap_cost, refs.cheap_quality, refs.ref_cost, refs.ref_quality)
    area, steps = metrics.arqgc(points, *norm), metrics.arqgc_steps(points, *norm)
    out: dict[str, float | None] = {
        "arqgc": None if np.isnan(area) else area,
        "arqgc_steps": None if np.isnan(steps) else steps,
    }
    for f, key in zip(QUALITY_FRACTIONS, COST_SHARES, strict=True):
        out[key] = metrics.cost_share(points, refs.ref_cost, refs.ref_quality, f, mixing)
    parity = out[COST_SHARES[-1]]
    out["saving_at_parity"] = None if parity is None else 1.0 - parity
    return out


def _ranked(values: list[float | None], key: str) -> np.ndarray:
    worst = -np.inf if key in HIGHER_IS_BETTER else np.inf
    return np.array([worst if v is None else v for v in values], dtype=np.float64)


def resample_refs(true_q: np.ndarray, true_cost: np.ndarray, refs: Refs, w: np.ndarray) -> list:
    """The full-set reference and cheapest models, their means re-read on each resample."""
    n = w.shape[1]
    cols = [true_cost[:, refs.ref_idx], true_q[:, refs.ref_idx],
            true_cost[:, refs.cheap_idx], true_q[:, refs.cheap_idx]]
    rc, rq, cc, cq = (w @ np.asarray(c, dtype=np.float64) / n for c in cols)
    return [Refs(refs.ref_idx, *r[:2], refs.cheap_idx, *r[2:])
            for r in zip(rc, rq, cc, cq, strict=True)]


def _interval(point: float | None, draws: np.ndarray, level: float) -> dict:
    with np.errstate(invalid="ignore"):  # inf - inf between two unreached draws: nan, None
        lo, hi = np.percentile(draws, [(100 - level) / 2, (100 + level) / 2])
    return {"point": point, "lo": float(lo) if np.isfinite(lo) else None,
            "hi": float(hi) if np.isfinite(hi) else None,
            "reached_share": float(np.isfinite(draws).mean())}


def p_beats(a: np.ndarray, b: np.ndarray, higher_is_better: bool = True) -> float:
    """Share of resamples in which ``a`` is ahead of ``b``; a tie counts half (identical methods:
    exactly 0.5)."""
    a, b = (a, b) if higher_is_better else (-a, -b)
    return float(np.mean((a > b) + 0.5 * (a == b)))


def paired_bootstrap(
    methods: Mapping[str, PerPrompt], true_q: np.ndarray, true_cost: np.ndarray, refs: Refs,
    resamples: int = DEFAULT_RESAMPLES, seed: int = 0, against: str = "ipr", level: float = LEVEL,
) -> dict:
    """Point estimates (full set), ``level``% percentile intervals and P(``against`` beats each
    other method) over one shared set of resamples. Returns ``intervals`` {method: {figure:
    {point, lo, hi, reached_share}}}, ``p_beats`` {method: {figure: P}} (ARQGC: higher wins;
    cost share at 95%: lower wins), ``draws`` {method: {figure: [B] ranked values}} and
    ``resample_indices`` [B, n] (what every method was measured on)."""
    tq, tc = np.asarray(true_q, dtype=np.float64), np.asarray(true_cost, dtype=np.float64)
    n = tq.shape[0]
    for name, pp in methods.items():
        if pp.cost.shape[1] != n:
            raise ValueError(f"method {name!r} has {pp.cost.shape[1]} prompts, expected {n}")
    idx = resample_indices(n, resamples, seed)
    w = weights(idx, n)
    brefs = resample_refs(tq, tc, refs, w)
    intervals: dict[str, dict] = {}
    draws: dict[str, dict[str, np.ndarray]] = {}
    for name, pp in methods.items():
        point = figures(pp.points(), refs, pp.mixing)
        rows = [figures(p, r, pp.mixing) for p, r in zip(pp.points(w), brefs, strict=True)]
        draws[name] = {k: _ranked([r[k] for r in rows], k) for k in FIGURES}
        intervals[name] = {k: _interval(point[k], draws[name][k], level) for k in FIGURES}
    beats = {
        name: {k: p_beats(draws[against][k], draws[name][k], k in HIGHER_IS_BETTER)
               for k in COMPARED}
        for name in methods if name != against and against in methods
    }
    return {"intervals": intervals, "p_beats": beats, "draws": draws, "resample_indices": idx}


def bootstrap_report(
    methods: Mapping[str, PerPrompt], true_q: np.ndarray, true_cost: np.ndarray, refs: Refs,
    resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
) -> dict:
    """The JSON-friendly part of :func:`paired_bootstrap` for ``ipr evaluate``'s report."""
    t0 = time.perf_counter()
    out = paired_bootstrap(methods, true_q, true_cost, refs, resamples, seed)
    iv = out["intervals"]
    return {
        "bootstrap": {"resamples": resamples, "seed": seed, "level": LEVEL, "paired": True,
                      "refs": "full-set reference and cheapest models, re-measured per resample",
                      "seconds": round(time.perf_counter() - t0, 3)},
        "intervals": iv,
        "cost_share": {m: {str(f): iv[m][k] for f, k in zip(QUALITY_FRACTIONS, COST_SHARES,
                                                              strict=True)} for m in iv},
        "p_ipr_beats": out["p_beats"],
    }
