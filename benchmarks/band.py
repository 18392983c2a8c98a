"""The correction band, measured offline (``python -m benchmarks band``; ``make band``).

A feedback correction must move a model that changed and leave alone one that did not. Both, for
each band (ipr_model/serving/corrections.py) on a dataset with a train and a test split:

- **stationary**: half the test split (seeded), routed at τ = 0.2 by the artifact; each prompt's
  label is the recorded quality of the model it went to (what `make learn` feeds the feedback
  service); every model with at least 10 labels gets a correction fitted on them, as the feedback
  service fits it; the other half's figures with and without the corrections, paired bootstrap
  over its prompts (ARQGC; P(corrected ahead));
- **drift**: `make drift`'s target (the model taking most of the largest task at τ = 0.1) fails
  that task: 40 and 150 of its train prompts routed to it, labelled 0, recalibrate it (with the
  held-out guardrail); its share of the task's test prompts before and after.

Writes ``build/band-<dataset>.json``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.drift import pick_target, shares
from ipr_model.evaluation import bootstrap
from ipr_model.evaluation import quality_cost as metrics
from ipr_model.serving.decision import decide
from ipr_model.serving.scorer import Scorer, predict
from ipr_model.training.datasets import load_dataset
from ipr_model.training.refit import RecalConfig, candidate_card, recalibrate
from ipr_model.training.train import embed

BANDS = (0.0, 0.3, 0.4, 0.5, 0.6)


def stationary(scorer: Scorer, emb: np.ndarray, test, band: float, seed: int = 0) -> dict:
    ids = scorer.model_ids
    perm = np.random.default_rng(seed).permutation(len(test))
    labelled, judged = perm[: len(test) // 2], np.sort(perm[len(test) // 2 :])
    texts = [test.prompts[i] for i in labelled]
    chosen = decide(scorer, scorer.score_embeddings(emb[labelled], texts), [0.2] * len(labelled))
    cards = list(scorer.cards)
    for m in sorted({d.model_id for d in chosen}):
        rows = [i for i, d in zip(labelled, chosen, strict=True) if d.model_id == m]
        if len(rows) >= 10:
            j = ids.index(m)
            cards[j] = candidate_card(cards[j], emb[rows], test.quality[rows, j],
                                      np.ones(len(rows)), RecalConfig(band=band))
    tq, tc = test.quality[judged], test.cost[judged]
    methods = {}
    for name, cs in (("corrected", cards), ("uncorrected", scorer.cards)):
        q, cost, _ = predict(cs, emb[judged], [test.prompts[i] for i in judged])
        methods[name] = bootstrap.per_prompt(q, cost, tq, tc, ids)
    out = bootstrap.paired_bootstrap(methods, tq, tc, metrics.reference_and_cheapest(tq, tc),
                                     against="corrected", seed=seed)
    iv = out["intervals"]
    diff = out["draws"]["corrected"]["arqgc"] - out["draws"]["uncorrected"]["arqgc"]
    return {"labels": len(labelled), "judged": len(judged),
            "arqgc": {k: iv[k]["arqgc"] for k in methods},
            "difference": {"point": iv["corrected"]["arqgc"]["point"]
                           - iv["uncorrected"]["arqgc"]["point"],
                           "lo": float(np.percentile(diff, 2.5)),
                           "hi": float(np.percentile(diff, 97.5))},
            "p_corrected_ahead": out["p_beats"]["uncorrected"]["arqgc"]}


def drift(artifacts: Path, data, band: float, model: str, task: str, routed: list[int],
          tolerance: float = 0.1) -> dict:
    train, test = data.split("train"), data.split("test")
    emb = embed(Path(artifacts) / "encoder", [train.prompts[i] for i in routed])
    out = {}
    for n in (40, 150):
        with tempfile.TemporaryDirectory() as tmp:
            res = recalibrate(artifacts, {model: (emb[:n], np.zeros(len(emb[:n])))},
                              Path(tmp) / "v", RecalConfig(band=band))
            after = shares(res.location or artifacts, test.prompts, test.tasks, model, tolerance)
        out[f"share_after_{min(n, len(emb))}_labels"] = round(after[task], 3)
    return out


def run(artifacts: Path, dataset: Path, bands=BANDS) -> dict:
    data = load_dataset(dataset)
    scorer = Scorer.load(artifacts)
    test = data.split("test").restrict(scorer.model_ids)
    emb = embed(Path(artifacts) / "encoder", test.prompts)
    model, task = pick_target(artifacts, data.split("test"), 0.1)
    train = data.split("train")
    idx = [i for i, t in enumerate(train.tasks) if t == task]
    chosen = decide(scorer, scorer.score([train.prompts[i] for i in idx]), [0.1] * len(idx))
    routed = [i for i, d in zip(idx, chosen, strict=True) if d.model_id == model][:150]
    before = shares(artifacts, test.prompts, test.tasks, model, 0.1)[task]
    rows = []
    for band in bands:
        rows.append({"band": band, "stationary": stationary(scorer, emb, test, band),
                     "drift": drift(artifacts, data, band, model, task, routed)})
        print(json.dumps(rows[-1]), flush=True)
    return {"dataset": data.name, "drift_model": model, "drift_task": task,
            "drift_share_before": round(before, 3), "bands": rows}
