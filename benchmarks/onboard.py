"""Onboarding a model from explored traffic, measured offline (``make onboard``).

What it does, on a dataset with a train and a test split (zeroeval):

1. picks the model that is good for its price: the best mean quality per dollar among the models
   above the median mean quality on the train split (or ``--model``);
2. makes an artifact without it: a copy of the offline artifact (trained with every model) with
   the model's card removed; the joint prompt side stays the one learned with its outcomes
   (retraining without it is the honest baseline: not done here, see docs/measurements.md);
3. adds it prices-only (``ipr_model.training.onboard.add_prices_only``);
4. streams the train split's prompts in order through the router's decision (``decision.decide``
   with ``explore_share``: the same code the router runs, without Kafka); every prompt explored
   to the model gets its recorded outcome as a label (what the replay worker and the feedback
   service would join), and every ``--every`` labels the model's card is refitted as the
   feedback service does (``recalibrate``'s onboarding path, ``fitted_card``);
5. after each refit, the test split's ARQGC of that version vs the offline artifact, with the
   paired bootstrap interval of the difference; labels so far; exploration spend (recorded cost
   of the explored calls) vs the stream's recorded cost so far.

It does not go through Kafka: the integration test ``tests/integration/test_onboard.py`` does,
on a few prompts. Writes ``build/onboard.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ipr_model.artifacts.manifest import model_dir, read_manifest, write_manifest
from ipr_model.evaluation import quality_cost as metrics
from ipr_model.serving.decision import decide
from ipr_model.serving.scorer import Scorer, predict
from ipr_model.training.datasets import Dataset, load_dataset
from ipr_model.training.onboard import ONBOARDING, add_prices_only, fitted_card
from ipr_model.training.train import embed


def pick_model(train: Dataset) -> str:
    """Best mean quality per mean dollar among the models above the median mean quality."""
    q, c = train.quality.mean(axis=0), train.cost.mean(axis=0)
    good = q > np.median(q)
    return train.model_ids[int(np.argmax(np.where(good, q / np.maximum(c, 1e-12), -np.inf)))]


def without(src: Path, out: Path, model_id: str, info) -> Path:
    """A copy of ``src`` without ``model_id``'s card, then with it added prices-only."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, out)
    shutil.rmtree(out / model_dir(model_id))
    m = read_manifest(src)
    write_manifest(out, [x for x in m.models if x != model_id], m.carried_over(),
                   parent=m.version)
    add_prices_only(out, info)
    return out


def arqgc(pred, cost, test: Dataset, ids) -> tuple[float, np.ndarray]:
    refs = metrics.reference_and_cheapest(test.quality, test.cost)
    pts = metrics.operating_points(pred, cost, test.quality, test.cost, ids)
    return metrics.summarize("ipr", pts, refs)["arqgc"], pts


def run(artifacts: Path, dataset: Path, out_dir: Path, share: float, every: int,
        tolerance: float, graduate: int, model: str | None = None) -> dict:
    ds = load_dataset(dataset)
    full = Scorer.load(artifacts)
    train, test = (ds.split(s).restrict(full.model_ids) for s in ("train", "test"))
    target = model or pick_model(train)
    root = without(Path(artifacts), out_dir / "onboard-artifact", target, train.model(target))
    scorer = Scorer.load(root)
    ids = scorer.model_ids
    col = {m: train.model_ids.index(m) for m in ids}
    enc = Path(artifacts) / "encoder"
    tr_emb, te_emb = embed(enc, train.prompts), embed(enc, test.prompts)
    test_ids = test.restrict(ids)
    ref_pred, ref_cost, _ = predict(full.cards, te_emb, test.prompts)
    ref_score, _ = arqgc(ref_pred, ref_cost, test, full.model_ids)
    tr_scores = scorer.score_embeddings(tr_emb, train.prompts)
    decisions = decide(scorer, tr_scores, [tolerance] * len(train),
                       prompt_ids=[f"train-{i}" for i in range(len(train))],
                       explore_share=share)
    chosen = np.array([col[d.model_id] for d in decisions])
    spent = train.cost[np.arange(len(train)), chosen]
    explored = np.array([d.rule == "explore" for d in decisions])
    j = ids.index(target)
    steps, xs, ys = [], [], []
    for i in np.flatnonzero(explored):
        xs.append(tr_emb[i])
        ys.append(train.quality[i, col[target]])
        if len(ys) % every and i != np.flatnonzero(explored)[-1]:
            continue
        card = fitted_card(scorer.cards[j], np.stack(xs), np.array(ys), graduate)
        cards = scorer.cards[:j] + [card] + scorer.cards[j + 1:]
        pred, cost, _ = predict(cards, te_emb, test.prompts)
        score, _ = arqgc(pred, cost, test_ids, ids)
        steps.append(_step(len(ys), i, spent, explored, score, ref_score, card,
                           (pred, cost, test_ids, ids), (ref_pred, ref_cost, test, full.model_ids)))
    report = {"dataset": ds.name, "model": target, "explore_share": share, "tolerance": tolerance,
              "streamed": "train split prompts (" + str(len(train)) + ")",
              "judged_on": f"test split ({len(test)} prompts), offline",
              "offline_arqgc": ref_score, "steps": steps,
              "reached": next((s for s in steps if s["gap"] >= -0.01), None),
              "stays": next((s for k, s in enumerate(steps)
                             if all(t["gap"] >= -0.01 for t in steps[k:])), None)}
    (out_dir / "onboard.json").write_text(json.dumps(report, indent=1))
    return report


def _step(labels, i, spent, explored, score, ref_score, card, new, ref) -> dict:
    gap, lo, hi = _gap_interval(new, ref)
    return {"labels": labels, "prompts_streamed": int(i + 1),
            "explore_spend_share": float(spent[: i + 1][explored[: i + 1]].sum()
                                         / spent[: i + 1].sum()),
            "arqgc": score, "offline_arqgc": ref_score, "gap": score - ref_score,
            "gap_interval_95": [lo, hi], "bootstrap_gap_median": gap,
            "onboarding": bool(card.info.get(ONBOARDING))}


def _gap_interval(new, ref, reps: int = 100) -> tuple[float, float, float]:
    """Paired bootstrap over test prompts of ARQGC(new) - ARQGC(offline)."""
    rng = np.random.default_rng(0)
    n = len(new[2])
    out = []
    for _ in range(reps):
        b = rng.integers(0, n, n)
        a = [arqgc(p[b], c[b], t.subset(b), i)[0] for p, c, t, i in (new, ref)]
        out.append(a[0] - a[1])
    return tuple(float(x) for x in np.percentile(out, [50, 2.5, 97.5]))
