"""Routing quality of the IPR estimators against the baselines of docs/design.md, on one split.

Every router is routed with the same rule and the same estimated costs (the artifact's cost
models); only the predicted quality differs. Measured with the recorded quality and cost.

- ``evaluate_split``: trained artifacts on a held-out split (baselines fit on the train split).
- ``cross_validate``: k-fold on a dataset with no test split (routerbench): each fold trains the
  adapters, calibrations and cost models afresh; predictions are pooled over the folds and
  measured once.
- ``with_intervals``: the paired bootstrap over prompts (``ipr_model.evaluation.bootstrap``) of
  every router and the random mix, added to a report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ipr_model.evaluation import baselines, bootstrap
from ipr_model.evaluation import quality_cost as metrics
from ipr_model.serving.encoder import sentence_part
from ipr_model.serving.rule import Variant
from ipr_model.training.datasets import Dataset
from ipr_model.training.fitting import DEFAULT_CONFIG, AdapterConfig

Progress = Callable[[str, int, int], None]


def report(
    test: Dataset,
    est_cost: np.ndarray,
    predictions: dict[str, np.ndarray],
    variant: Variant = "ipr",
) -> dict:
    """Metrics of every router in ``predictions`` plus the single-model baselines, as a dict."""
    ids = test.model_ids
    refs = metrics.reference_and_cheapest(test.quality, test.cost)
    routers = {}
    for name, pred in predictions.items():
        pts = metrics.operating_points(
            pred, est_cost, test.quality, test.cost, ids, variant=variant
        )
        summary = metrics.summarize(name, pts, refs)
        summary["top1_accuracy"] = metrics.top1_accuracy(pred, test.quality)
        summary["calibration_ece"] = metrics.calibration(pred, test.quality, ids)
        routers[name] = summary
    mix = baselines.random_mix(test.quality, test.cost, refs)
    single = metrics.single_model_points(test.quality, test.cost)
    return {
        "dataset": test.name,
        "prompts": len(test),
        "models": len(ids),
        "variant": variant,
        "reference": refs.as_dict(ids),
        "routers": routers,
        "random_mix": {
            "arqgc": mix["arqgc"],
            "saving_at_parity": mix["saving_at_parity"],
            "cost_share": {
                str(f): metrics.cost_share(mix["points"], refs.ref_cost, refs.ref_quality, f,
                                           mixing=True)
                for f in metrics.QUALITY_FRACTIONS
            },
        },
        "always_reference": {"cost": refs.ref_cost, "quality": refs.ref_quality},
        "always_cheapest": {"cost": refs.cheap_cost, "quality": refs.cheap_quality},
        "single_models": {
            m: {"cost": float(c), "quality": float(q)}
            for m, (c, q) in zip(ids, single, strict=True)
        },
    }


def with_intervals(
    rep: dict,
    test: Dataset,
    est_cost: np.ndarray,
    predictions: dict[str, np.ndarray],
    resamples: int = bootstrap.DEFAULT_RESAMPLES,
    seed: int = 0,
    variant: Variant = "ipr",
) -> dict:
    """``rep`` plus ``bootstrap``, ``intervals``, ``cost_share`` and ``p_ipr_beats``: a paired
    bootstrap over ``test``'s prompts of every router in ``predictions`` and the random mix of
    single models (``random_mix``), decisions held fixed. With cross-validation ``test`` is the
    whole dataset and the predictions the pooled out-of-fold ones."""
    refs = metrics.reference_and_cheapest(test.quality, test.cost)
    methods = {
        name: bootstrap.per_prompt(pred, est_cost, test.quality, test.cost, test.model_ids,
                                   variant=variant)
        for name, pred in predictions.items()
    }
    methods["random_mix"] = bootstrap.single_models(test.quality, test.cost)
    return {**rep, **bootstrap.bootstrap_report(methods, test.quality, test.cost, refs,
                                                resamples, seed)}


def pair_report(
    test: Dataset, est_cost: np.ndarray, predictions: dict[str, np.ndarray],
    pair: tuple[str, str] | None = None, resamples: int = bootstrap.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Routing between two models only (default: the dataset's reference and its cheapest, the
    strong and the weak model of a typical deployment), each router under the ``ipr`` rule (its
    pair form) and under ``range`` (the switch it would be without it), with paired-bootstrap
    intervals when ``resamples``."""
    if pair is None:
        refs = metrics.reference_and_cheapest(test.quality, test.cost)
        pair = (test.model_ids[refs.ref_idx], test.model_ids[refs.cheap_idx])
    if len(set(pair)) != 2:
        raise ValueError(f"a pair names two different models, got {pair}")
    sub = test.restrict(list(pair))
    cols = [test.model_ids.index(m) for m in pair]
    cost, preds = est_cost[:, cols], {k: v[:, cols] for k, v in predictions.items()}
    out: dict = {"models": list(pair)}
    for variant in ("ipr", "range"):
        rep = report(sub, cost, preds, variant=variant)
        if resamples:
            rep = with_intervals(rep, sub, cost, preds, resamples, seed, variant)
        out[variant] = rep
    return out


def baseline_predictions(
    encoder_dir: Path, train_emb: np.ndarray, train_q: np.ndarray, test_emb: np.ndarray,
    test_q: np.ndarray,
) -> dict[str, np.ndarray]:
    """docs/design.md's baselines, on the encoder's sentence embedding (its last layer), and the
    oracle. When the router's embedding pools more layers, kNN and linear on that embedding too
    (``knn_layers``, ``linear_layers``): what the layers alone bring, without the adapters."""
    s_train, s_test = sentence_part(encoder_dir, train_emb), sentence_part(encoder_dir, test_emb)
    out = {
        "knn": baselines.knn_quality(s_train, train_q, s_test),
        "linear": baselines.linear_quality(s_train, train_q, s_test, c=1.0),
    }
    if s_train is not train_emb:
        out["knn_layers"] = baselines.knn_quality(train_emb, train_q, test_emb)
        out["linear_layers"] = baselines.linear_quality(train_emb, train_q, test_emb, c=1.0)
    return {**out, "oracle": baselines.oracle_quality(test_q)}


def evaluate_split(
    artifacts: Path, dataset: Dataset, split: str = "test", progress: Progress | None = None
) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    """Evaluate trained artifacts on ``split``; returns (report, predictions, estimated cost)."""
    from ipr_model.serving.scorer import Scorer
    from ipr_model.training.train import embed

    scorer = Scorer.load(artifacts)
    test = dataset.split(split).restrict(scorer.model_ids)
    train = dataset.split("train").restrict(scorer.model_ids)
    enc_dir = Path(artifacts) / "encoder"
    test_emb = embed(enc_dir, test.prompts, progress)
    train_emb = embed(enc_dir, train.prompts, progress)
    t0 = time.perf_counter()
    scores = scorer.score_embeddings(test_emb, test.prompts)
    cost = scores.cost
    preds = {
        "ipr": scores.quality,
        **baseline_predictions(enc_dir, train_emb, train.quality, test_emb, test.quality),
    }
    out = report(test, cost, preds)
    out.update(split=split, artifact_version=scorer.version, seconds=time.perf_counter() - t0)
    return out, preds, cost


def cross_validate(
    dataset: Dataset,
    folds: int = 5,
    cfg: AdapterConfig = DEFAULT_CONFIG,
    seed: int = 0,
    progress: Progress | None = None,
    layers: tuple[int, ...] | None = None,
    tail_tokens: int | None = None,
) -> tuple[dict, dict[str, np.ndarray], np.ndarray, Dataset]:
    """k-fold cross-validated evaluation on every row of ``dataset`` (the default encoder, pooling
    ``layers``). Each fold chooses its cut of long prompts as ``ipr train`` does, among candidates
    set by the whole dataset's prompt lengths (``tail_tokens`` fixes it); its baselines use the
    same embeddings."""
    from ipr_model.serving.scorer import predict
    from ipr_model.training.train import choose_cut, cut_candidates, embed

    encoders, _ = cut_candidates(dataset.prompts, layers=layers, tail_tokens=tail_tokens)
    views = {tail: embed(path, dataset.prompts, progress) for tail, path in encoders.items()}
    n, m = dataset.quality.shape
    fold = np.random.default_rng(seed).permutation(np.arange(n) % folds)
    preds: dict[str, np.ndarray] = {"ipr": np.zeros((n, m))}
    cost = np.zeros((n, m))
    chosen = []
    for f in range(folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        train = dataset.subset(tr)
        tail, cards, _ = choose_cut({t: v[tr] for t, v in views.items()}, train, cfg)
        emb = views[tail]
        q, c, _ = predict(cards, emb[te], [dataset.prompts[i] for i in te])
        preds["ipr"][te], cost[te] = q, c
        base = baseline_predictions(encoders[tail], emb[tr], train.quality, emb[te],
                                    dataset.quality[te])
        for k, v in base.items():
            preds.setdefault(k, np.zeros((n, m)))[te] = v
        chosen.append(tail)
        if progress:
            progress("fold", f + 1, folds)
    out = report(dataset, cost, preds)
    out.update(split=f"{folds}-fold cross-validation", folds=folds, tail_tokens_per_fold=chosen,
               per_fold=fold_figures(dataset, fold, cost, preds))
    return out, preds, cost, dataset


def fold_figures(
    dataset: Dataset, fold: np.ndarray, est_cost: np.ndarray, predictions: dict[str, np.ndarray]
) -> list[dict[str, dict]]:
    """Each fold measured on its own (its own reference model): per router, ARQGC, steps and
    saving at parity. The pooled figures are the steadier; these show the spread that one
    held-out split of a fold's size would."""
    out = []
    for f in np.unique(fold):
        te = np.flatnonzero(fold == f)
        rep = report(dataset.subset(te), est_cost[te], {k: v[te] for k, v in predictions.items()})
        out.append({
            name: {k: r[k] for k in ("arqgc", "arqgc_steps", "saving_at_parity")}
            for name, r in rep["routers"].items()
        })
    return out
