"""Winning traffic back after a drift ends, measured offline (``python -m benchmarks winback``;
``make winback``).

`make drift`'s failure, then its end: the model the router sends most of the largest task to
(τ = 0.1) fails that task: ``fail`` of its train prompts routed to it are labelled 0 and a
recalibration corrects it away (its share of the task's test prompts falls). Then the model
recovers: the task's other train prompts are streamed, in a seeded order, through the router's
decision (``decision.decide``, the code the router runs) with exploration at ``share``: an explored
prompt goes to the model the feedback lowered most (``win_back``), and every prompt that reaches
the model, explored or routed, gets its recorded (recovered) outcome as a label. Every ``every``
new labels the model is recalibrated on all its labels, as the feedback service does (the failed
ones still weigh in full: the worst case, a recovery right after the failure). Reports after each
recalibration the model's share of the task's test prompts, the labels since the recovery, and
the exploration spend (recorded cost of the explored calls) as a share of the stream's recorded
cost so far, until the share is back within ``within`` of where it was before the failure.

Writes ``build/winback.json``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.drift import pick_target, shares
from ipr_model.serving.decision import decide
from ipr_model.serving.scorer import Scorer
from ipr_model.training.datasets import load_dataset
from ipr_model.training.refit import RecalConfig, recalibrate
from ipr_model.training.train import embed


def run(artifacts: Path, dataset: Path, share: float = 0.1, every: int = 20, fail: int = 150,
        tolerance: float = 0.1, within: float = 0.1, seed: int = 0, gap: float = 0.0) -> dict:
    """``gap``: how long before the recovery the failure was, in label half-lives
    (``RecalConfig.half_life_s``): the failed labels' age."""
    data = load_dataset(dataset)
    train, test = data.split("train"), data.split("test")
    model, task = pick_target(artifacts, test, tolerance)
    base = Scorer.load(artifacts)
    j = train.model_ids.index(model)
    idx = [i for i, t in enumerate(train.tasks) if t == task]
    chosen = decide(base, base.score([train.prompts[i] for i in idx]), [tolerance] * len(idx))
    failed = [i for i, d in zip(idx, chosen, strict=True) if d.model_id == model][:fail]
    rest = np.random.default_rng(seed).permutation(sorted(set(idx) - set(failed)))
    enc = Path(artifacts) / "encoder"
    x_fail = embed(enc, [train.prompts[i] for i in failed])
    x_rest = embed(enc, [train.prompts[i] for i in rest])
    task_test = [k for k, t in enumerate(test.tasks) if t == task]
    probe = ([test.prompts[k] for k in task_test], [task] * len(task_test))

    def share_of(root: Path) -> float:
        return shares(root, *probe, model, tolerance)[task]

    with tempfile.TemporaryDirectory() as tmp:
        versions = Path(tmp)
        xs, ys = [x_fail], [np.zeros(len(failed))]
        ages = [np.full(len(failed), gap * RecalConfig().half_life_s)]
        current = recalibrate(artifacts, {model: (x_fail, ys[0])}, versions / "v0").location
        report = {"dataset": data.name, "model": model, "task": task, "explore_share": share,
                  "tolerance": tolerance, "failed_labels": len(failed), "gap_half_lives": gap,
                  "share_before": share_of(artifacts), "share_failed": share_of(current),
                  "steps": []}
        spent = explored = total = 0.0
        new = 0
        scorer = Scorer.load(current, reuse=base)
        for n, i in enumerate(rest):
            d = decide(scorer, scorer.score_embeddings(x_rest[n : n + 1], [train.prompts[i]]),
                       [tolerance], prompt_ids=[f"winback-{seed}-{i}"],
                       explore_share=share)[0]
            cost = float(train.cost[i, train.model_ids.index(d.model_id)])
            total += cost
            if d.rule == "explore":
                explored, spent = explored + 1, spent + cost
            if d.model_id != model:
                continue
            xs.append(x_rest[n : n + 1])
            ys.append(train.quality[i : i + 1, j])
            ages.append(np.zeros(1))
            new += 1
            if new % every:
                continue
            labels = tuple(np.concatenate(a) for a in (xs, ys, ages))
            res = recalibrate(artifacts, {model: labels}, versions / f"v{new}")
            if res.location is not None:
                current = res.location
                scorer = Scorer.load(current, reuse=scorer)
            step = {"labels_since_recovery": new, "prompts_streamed": n + 1,
                    "explored": int(explored), "spend_share": spent / max(total, 1e-12),
                    "published": res.version is not None, "share": share_of(current)}
            report["steps"].append(step)
            print(json.dumps(step), flush=True)
            if step["share"] >= report["share_before"] - within:
                break
    report["won_back"] = bool(report["steps"]) and \
        report["steps"][-1]["share"] >= report["share_before"] - within
    return report
