"""`make drift`: the feedback loop on a real drift, on real data.

One model that receives much of a task's traffic degrades on that task (its replay worker reports
quality 0 there, what a bad provider update looks like). The task's test prompts are streamed in
rounds through the running system: round 0 before the degradation, rounds 1..R after it. Run twice,
each on a broker of its own: with the feedback service on (labels -> recalibration -> hot swap)
and, as the control, with it off. Reports quality and the degraded model's share of the task's
traffic per round, the labels it took to recover, the versions published and lost prompts, and
the degraded model's share of the other tasks before and after (the latest version, offline),
and offline, a recalibration on labels of train prompts judged on the test prompts, to
``build/drift.json`` and ``build/drift.png``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.loop import all_back, lost, start_services, stream, versions_dir
from benchmarks.traffic import prompt_events, wait_until_routing
from ipr_model.training.datasets import load_dataset
from schemas.topics import model_topic
from streams.kafka.admin import create_topics
from streams.kafka.local import kafka_bootstrap
from streams.kafka.settings import KafkaSettings

MARKER = "-deg"


def pick_target(artifacts: Path, test, tolerance: float) -> tuple[str, str]:
    """The most frequent task of the split and the model the router sends most of it to."""
    from ipr_model.serving.decision import decide
    from ipr_model.serving.scorer import Scorer

    task = Counter(test.tasks).most_common(1)[0][0]
    idx = [i for i, t in enumerate(test.tasks) if t == task]
    scorer = Scorer.load(artifacts)
    d = decide(scorer, scorer.score([test.prompts[i] for i in idx]), [tolerance] * len(idx))
    return Counter(x.model_id for x in d).most_common(1)[0][0], task


def latest_version(versions_dir: Path, first: Path) -> Path:
    """The newest artifact version the feedback service wrote to ``versions_dir`` (``first`` when
    it published none)."""
    found = sorted((json.loads((d / "manifest.json").read_text())["created_at"], d)
                   for d in versions_dir.glob("*") if (d / "manifest.json").is_file())
    return found[-1][1] if found else first


def shares(root: Path, texts: list[str], tasks: list[str], model: str, tolerance: float) -> dict:
    """``model``'s share of each task's ``texts`` at ``tolerance`` by the artifacts at ``root``
    (offline, in-process)."""
    from ipr_model.serving.decision import decide
    from ipr_model.serving.scorer import Scorer

    scorer = Scorer.load(root)
    chosen = np.array([d.model_id == model for d in
                       decide(scorer, scorer.score(texts), [tolerance] * len(texts))])
    t = np.array(tasks)
    return {k: float(chosen[t == k].mean()) for k in sorted(set(tasks))}


def other_tasks_share(artifacts: Path, latest: Path, test, task: str, model: str,
                      tolerance: float) -> dict:
    """The degraded model's share of each other task of the split, by the first artifact and by
    the latest version: what the recovery cost where the model did not degrade."""
    idx = [i for i, t in enumerate(test.tasks) if t != task]
    texts, tasks = [test.prompts[i] for i in idx], [test.tasks[i] for i in idx]
    return {name: shares(root, texts, tasks, model, tolerance)
            for name, root in (("before", artifacts), ("after", latest))}


def held_out_recovery(artifacts: Path, data, task: str, model: str, tolerance: float,
                      labels: int = 150) -> dict:
    """Recalibration judged on prompts it has no label for (``make drift`` replays its labelled
    prompts): ``labels`` train prompts of ``task`` that the first version routes to ``model``,
    labelled "failed", recalibrate it offline; its share of every task's test prompts before and
    after."""
    import tempfile

    from ipr_model.serving.decision import decide
    from ipr_model.serving.scorer import Scorer
    from ipr_model.training.refit import recalibrate
    from ipr_model.training.train import embed

    train, test = data.split("train"), data.split("test")
    idx = [i for i, t in enumerate(train.tasks) if t == task]
    scorer = Scorer.load(artifacts)
    scores = scorer.score([train.prompts[i] for i in idx])
    decisions = decide(scorer, scores, [tolerance] * len(idx))
    routed = [i for i, d in zip(idx, decisions, strict=True) if d.model_id == model][:labels]
    emb = embed(Path(artifacts) / "encoder", [train.prompts[i] for i in routed])
    with tempfile.TemporaryDirectory() as tmp:
        res = recalibrate(artifacts, {model: (emb, np.zeros(len(routed)))}, Path(tmp) / "v")
        after = res.location or artifacts
        return {"labels": len(routed), "published": res.version is not None,
                **{name: shares(root, test.prompts, test.tasks, model, tolerance)
                   for name, root in (("before", artifacts), ("after", after))}}


def run_scenario(artifacts, dataset, part, model, task, loop, rounds, rate, tolerance, min_labels,
                 run: str):
    settings = KafkaSettings()
    log_dir = Path("build") / "logs" / f"drift-{run}"
    out = []
    with kafka_bootstrap() as bootstrap:
        models = sorted(set(part.model_ids))
        topics = sorted({model_topic(m) for m in models})
        outputs = [settings.responses, settings.prompts_dlq, settings.feedback, *topics]
        inputs = [settings.prompts_in, settings.decisions, settings.control]
        asyncio.run(create_topics(bootstrap, [*inputs, *outputs], settings.topic_partitions))
        # the loop's speed in labels: publish as often as the labels allow
        feedback = {"IPR_FEEDBACK_MIN_LABELS": str(min_labels),
                    "IPR_FEEDBACK_MIN_PUBLISH_INTERVAL_S": "0"} if loop else None
        services = start_services(
            artifacts, dataset, {"IPR_KAFKA_BOOTSTRAP": bootstrap}, run, "drift", tolerance,
            feedback, log_dir, degrade=f"{model}|{task}|{MARKER}")
        router_pid = services[0].proc.pid
        try:
            asyncio.run(wait_until_routing(bootstrap, settings, run, topics))
            labels = 0
            for r in range(rounds + 1):
                tag = f"{run}-r{r}" + (MARKER if r > 0 else "")
                events = prompt_events(part, tag)
                got = asyncio.run(stream(bootstrap, outputs, tag, events, rate, settings))
                to_model = [k for k, v in got.routed.items() if v.model_id == model]
                labels += len(to_model) if r > 0 else 0
                out.append({
                    "round": r,
                    "degraded": r > 0,
                    "sent": len(events),
                    "routed": len(got.routed),
                    "dead_lettered": len(got.dead),
                    "responses": len(got.responses),
                    "lost": lost(got, events),
                    # False: the round was cut by the collector's deadline, not all came back
                    "all_back": all_back(got, len(events)),
                    "labels_dead_lettered": got.other_dead,
                    "quality": float(np.mean([f.quality for f in got.feedback.values()])),
                    "share_to_degraded": len(to_model) / max(1, len(got.routed)),
                    "labels_on_degraded_so_far": labels,
                    "versions": sorted(
                        Counter(v.router_version for v in got.routed.values()).items()
                    ),
                })
                print(f"{'loop on ' if loop else 'loop off'} round {r}: "
                      f"quality {out[-1]['quality']:.3f}, "
                      f"share to {model} {out[-1]['share_to_degraded']:.2f}, versions "
                      f"{[v for v, _ in out[-1]['versions']]}", flush=True)
                if loop and r > 0:
                    time.sleep(3)  # let the feedback service catch up before the next round
            restarted = services[0].proc.pid != router_pid or not services[0].alive()
        finally:
            for s in services:
                s.stop()
    return out, restarted


def run_drift(artifacts: Path, dataset: Path, rounds: int = 4, rate: float = 15.0,
              tolerance: float = 0.1, min_labels: int = 40,
              out: Path = Path("build/drift.json")) -> dict:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    data = load_dataset(dataset)
    test = data.split("test") if data.has_split("test") else data
    model, task = pick_target(artifacts, test, tolerance)
    part = test.subset([i for i, t in enumerate(test.tasks) if t == task])
    print(f"degrading {model} on {task} ({len(part)} test prompts per round)", flush=True)
    run_on, run_off = uuid.uuid4().hex[:6], uuid.uuid4().hex[:6]
    on, restarted_on = run_scenario(artifacts, dataset, part, model, task, True, rounds, rate,
                                    tolerance, min_labels, run_on)
    off, restarted_off = run_scenario(artifacts, dataset, part, model, task, False, 2, rate,
                                      tolerance, min_labels, run_off)
    before = on[0]
    last = on[-1]
    recovered = [r for r in on[1:] if r["share_to_degraded"] <= 0.2 * before["share_to_degraded"]
                 and r["quality"] >= before["quality"] - 0.02]
    first = recovered[0]["round"] if recovered else None
    report = {
        "degraded_model": model,
        "task": task,
        "prompts_per_round": len(part),
        "tolerance": tolerance,
        "min_labels": min_labels,
        "quality_before": before["quality"],
        "quality_degraded_no_loop": float(np.mean([r["quality"] for r in off[1:]])),
        "quality_degraded_with_loop": last["quality"],
        "share_to_degraded_before": before["share_to_degraded"],
        "share_to_degraded_after": last["share_to_degraded"],
        "share_to_degraded_no_loop": float(np.mean([r["share_to_degraded"] for r in off[1:]])),
        "labels_to_recover": (on[first - 1]["labels_on_degraded_so_far"] if first else None),
        "recovered_in_round": first,
        "versions_published": len({v for r in on for v, _ in r["versions"]}) - 1,
        "lost_prompts": sum(r["lost"] for r in on + off),
        # rounds the collector's deadline ended before all came back: their lost ones may be late
        "rounds_cut_short": sum(not r["all_back"] for r in on + off),
        "router_restarted": restarted_on or restarted_off,
        "share_to_degraded_other_tasks": other_tasks_share(
            artifacts, latest_version(versions_dir("drift", run_on), artifacts), test, task, model,
            tolerance),
        "held_out_recovery": (held_out_recovery(artifacts, data, task, model, tolerance)
                              if data.has_split("test") else None),
        "rounds_with_loop": on,
        "rounds_without_loop": off,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, out.with_suffix(".png"))
    return report


def plot(report: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, style in (("rounds_with_loop", "feedback loop on", "o-"),
                              ("rounds_without_loop", "loop off (control)", "s--")):
        rs = report[key]
        a.plot([r["round"] for r in rs], [r["quality"] for r in rs], style, label=label)
        b.plot([r["round"] for r in rs], [r["share_to_degraded"] for r in rs], style, label=label)
    a.axhline(report["quality_before"], color="grey", lw=0.8, ls=":", label="quality before")
    for ax, title in ((a, f"realised quality on {report['task']}"),
                      (b, f"share of {report['task']} sent to {report['degraded_model']}")):
        ax.axvline(0.5, color="red", lw=0.8, ls=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round (0: before the degradation)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=130)
    plt.close(fig)
