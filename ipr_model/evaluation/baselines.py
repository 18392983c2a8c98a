"""Baseline routers (docs/design.md, "How routing quality is measured").

Scorers return a predicted-quality matrix [n_test, m]; the caller routes every one of them with the
same rule (:func:`ipr_model.evaluation.quality_cost.operating_points`) and the same estimated
costs, so they differ only in their quality estimates:

- :func:`knn_quality`: mean recorded quality of the k nearest train prompts (cosine).
- :func:`linear_quality`: per-model logistic regression (binary labels) or ridge (graded labels).
- :func:`oracle_quality`: the recorded quality itself (an upper bound, not a router).

Fixed-point baselines, as (cost, quality) points: :func:`single_model_points`,
:func:`always_reference`, :func:`always_cheapest`, and :func:`random_mix` (the upper hull of the
single models). Embeddings are L2-normalised float32 [n, d]; they are re-normalised defensively.
"""

from __future__ import annotations

import numpy as np

from ipr_model.evaluation.quality_cost import (
    Refs,
    arqgc,
    reference_and_cheapest,
    saving_at_parity,
    single_model_points,
    upper_hull,
)

__all__ = [
    "K_GRID",
    "always_cheapest",
    "always_reference",
    "knn_quality",
    "linear_quality",
    "oracle_quality",
    "random_mix",
    "select_knn_k",
    "single_model_points",
]

K_GRID = (5, 10, 20, 50, 100)
LOGISTIC_CS = (0.1, 1.0, 10.0, 100.0)  # embeddings are unit-norm: features are small, C is large
_CHUNK = 1024


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _neighbours(train: np.ndarray, query: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    """Indices [n_query, k] of the k most cosine-similar train rows, most similar first."""
    out = np.empty((len(query), k), dtype=np.int64)
    for s in range(0, len(query), _CHUNK):
        sim = query[s : s + _CHUNK] @ train.T
        if exclude_self:  # query is train: a prompt is not its own neighbour
            r = np.arange(sim.shape[0])
            sim[r, s + r] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, part, axis=1), axis=1, kind="stable")
        out[s : s + _CHUNK] = np.take_along_axis(part, order, axis=1)
    return out


def select_knn_k(
    train_emb: np.ndarray, train_q: np.ndarray, grid: tuple[int, ...] = K_GRID
) -> int:
    """k with the lowest leave-one-out squared error of the kNN estimate on the train split
    (ties: the smaller k). Candidates above n_train - 1 are skipped."""
    emb = _unit(train_emb)
    q = np.asarray(train_q, dtype=np.float64)
    ks = [k for k in grid if 1 <= k <= len(emb) - 1]
    if not ks:
        raise ValueError(f"need at least 2 train prompts to choose k, got {len(emb)}")
    kmax = max(ks)
    best_k, best_err = ks[0], np.inf
    nb = _neighbours(emb, emb, kmax, exclude_self=True)  # sorted: every smaller k is a prefix
    for k in ks:
        err = float(((q[nb[:, :k]].mean(axis=1) - q) ** 2).mean())
        if err < best_err:
            best_k, best_err = k, err
    return best_k


def knn_quality(
    train_emb: np.ndarray, train_q: np.ndarray, test_emb: np.ndarray, k: int | None = None
) -> np.ndarray:
    """[n_test, m]: mean recorded quality of the k nearest train prompts by cosine similarity.

    ``k=None`` chooses k on the train split by leave-one-out (:func:`select_knn_k` over ``K_GRID``);
    an explicit k is capped at n_train.
    """
    tr, te = _unit(train_emb), _unit(test_emb)
    q = np.asarray(train_q, dtype=np.float64)
    if len(tr) != len(q):
        raise ValueError(f"train_emb has {len(tr)} rows but train_q has {len(q)}")
    if k is None:
        k = select_knn_k(tr, q)
    k = max(1, min(int(k), len(tr)))
    return q[_neighbours(tr, te, k, exclude_self=False)].mean(axis=1)


def _is_binary(y: np.ndarray) -> bool:
    return bool(np.isin(y, (0.0, 1.0)).all())


def _choose_c(x: np.ndarray, y: np.ndarray, cs: tuple[float, ...], seed: int) -> float:
    """C with the lowest 3-fold log loss (ties: the smaller C); warm-started along ascending C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    cs = tuple(sorted(cs))
    loss = np.zeros(len(cs))
    for tr, va in StratifiedKFold(3, shuffle=True, random_state=seed).split(x, y):
        clf = LogisticRegression(warm_start=True, max_iter=2000)
        for i, c in enumerate(cs):
            p = clf.set_params(C=c).fit(x[tr], y[tr]).predict_proba(x[va])[:, 1]
            p = np.clip(p, 1e-12, 1 - 1e-12)
            loss[i] -= np.sum(y[va] * np.log(p) + (1 - y[va]) * np.log(1 - p))
    return cs[int(np.argmin(loss))]


def linear_quality(
    train_emb: np.ndarray,
    train_q: np.ndarray,
    test_emb: np.ndarray,
    kind: str = "auto",
    c: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """[n_test, m]: one linear head per model on the embedding, clipped to [0, 1].

    ``kind``: ``"logistic"`` (P(correct), for {0, 1} labels), ``"ridge"`` (graded scores) or
    ``"auto"`` (logistic when every train label is 0 or 1, else ridge). Regularisation per model:
    ridge's alpha by efficient leave-one-out over {0.1, 1, 10, 100}; logistic's C by 3-fold log
    loss over ``LOGISTIC_CS`` unless ``c`` fixes it (the CV costs ~12 fits per model: about 3 min
    for 28 models x 2,200 prompts on 2 cores, against ~20 s with a fixed ``c``). A model whose train
    labels are all one value predicts that constant; with fewer than 3 examples of a class the CV
    is skipped and C = 1.
    """
    from sklearn.linear_model import LogisticRegression, RidgeCV

    x_tr = np.asarray(train_emb, dtype=np.float64)
    x_te = np.asarray(test_emb, dtype=np.float64)
    y = np.asarray(train_q, dtype=np.float64)
    if y.ndim != 2 or len(y) != len(x_tr):
        raise ValueError(f"train_q must be [n_train={len(x_tr)}, m], got {y.shape}")
    if kind == "auto":
        kind = "logistic" if _is_binary(y) else "ridge"
    if kind not in ("logistic", "ridge"):
        raise ValueError(f"kind must be 'auto', 'logistic' or 'ridge', got {kind!r}")
    if kind == "logistic" and not _is_binary(y):
        raise ValueError("kind='logistic' needs train labels in {0, 1}")
    out = np.empty((len(x_te), y.shape[1]), dtype=np.float64)
    for j in range(y.shape[1]):
        yj = y[:, j]
        if np.all(yj == yj[0]):
            out[:, j] = yj[0]
            continue
        if kind == "ridge":
            out[:, j] = RidgeCV(alphas=(0.1, 1.0, 10.0, 100.0)).fit(x_tr, yj).predict(x_te)
            continue
        yi = yj.astype(np.int64)
        cj = c
        if cj is None:
            cj = _choose_c(x_tr, yi, LOGISTIC_CS, seed) if np.bincount(yi).min() >= 3 else 1.0
        clf = LogisticRegression(C=cj, max_iter=2000).fit(x_tr, yi)
        out[:, j] = clf.predict_proba(x_te)[:, list(clf.classes_).index(1)]
    return np.clip(out, 0.0, 1.0)


def oracle_quality(test_true_q: np.ndarray) -> np.ndarray:
    """The recorded quality as the prediction: an upper bound on any quality estimator."""
    return np.array(test_true_q, dtype=np.float64, copy=True)


def always_reference(true_q: np.ndarray, true_cost: np.ndarray) -> np.ndarray:
    """[1, 2]: (C, Q) of sending every prompt to the reference model."""
    r = reference_and_cheapest(true_q, true_cost)
    return np.array([[r.ref_cost, r.ref_quality]])


def always_cheapest(true_q: np.ndarray, true_cost: np.ndarray) -> np.ndarray:
    """[1, 2]: (C, Q) of sending every prompt to the cheapest model."""
    r = reference_and_cheapest(true_q, true_cost)
    return np.array([[r.cheap_cost, r.cheap_quality]])


def random_mix(true_q: np.ndarray, true_cost: np.ndarray, refs: Refs | None = None) -> dict:
    """The "random mix of single models" baseline: send each prompt to a model drawn at random.

    Its frontier is the upper non-decreasing hull of the single-model points. Returns
    ``points`` [m, 2] (the single models), ``hull`` [h, 2] (its vertices), ``arqgc``,
    ``saving_at_parity`` on the hull (mixing allowed: the cheapest mix reaching Q_ref; since the
    reference is itself a vertex this is always reached, >= 0), and ``saving_at_parity_pure``
    over the single models alone (no mixing: 0 unless a cheaper model ties Q_ref).
    """
    pts = single_model_points(true_q, true_cost)
    r = refs if refs is not None else reference_and_cheapest(true_q, true_cost)
    return {
        "points": pts,
        "hull": upper_hull(pts),
        "arqgc": arqgc(pts, r.cheap_cost, r.cheap_quality, r.ref_cost, r.ref_quality),
        "saving_at_parity": saving_at_parity(pts, r.ref_cost, r.ref_quality, mixing=True),
        "saving_at_parity_pure": saving_at_parity(pts, r.ref_cost, r.ref_quality),
    }
