"""Onboarding through the real system (``python -m benchmarks onboard --live``): the train split's
prompts through a real router (exploring ``share``), replay workers and feedback service on a
local broker, and every version the feedback service announced judged offline on the test split
against the offline artifact. Every model's labels reach the feedback service, so the versions
also carry the other models' corrections: the figures are what the system serves, not the
onboarded model alone. Exploration spend counts the prompts whose id falls in the share and went
to the model (after it graduates the rule may send such a prompt there too: an upper bound)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

from benchmarks.loop import announced_versions, run_topics, start_services, stream
from benchmarks.onboard import arqgc, pick_model, without
from benchmarks.traffic import prompt_events, wait_until_routing
from ipr_model.artifacts.manifest import read_manifest
from ipr_model.serving.explore import explored
from ipr_model.serving.scorer import Scorer, predict
from ipr_model.training.datasets import load_dataset
from ipr_model.training.onboard import ONBOARDING
from ipr_model.training.train import embed
from schemas.topics import model_topic
from streams.kafka.admin import create_topics
from streams.kafka.local import kafka_bootstrap
from streams.kafka.settings import KafkaSettings


def run_live(artifacts: Path, dataset: Path, out_dir: Path, share: float, every: int,
             graduate: int, tolerance: float, rate: float = 20.0,
             limit: int | None = None) -> dict:
    ds = load_dataset(dataset)
    full = Scorer.load(artifacts)
    train, test = (ds.split(s).restrict(full.model_ids) for s in ("train", "test"))
    target = pick_model(train)
    root = without(Path(artifacts), out_dir / "onboard-live-artifact", target,
                   train.model(target))
    part = train.subset(list(range(limit or len(train))))
    run = f"onboard-{uuid.uuid4().hex[:8]}"
    with kafka_bootstrap() as kafka:
        got, announced = _stream(kafka, root, dataset, part, run, share, every, graduate,
                                 tolerance, rate)
    te_emb = embed(Path(artifacts) / "encoder", test.prompts)
    ref_pred, ref_cost, _ = predict(full.cards, te_emb, test.prompts)
    offline, _ = arqgc(ref_pred, ref_cost, test, full.model_ids)
    versions = _versions(Path("build") / "onboard-versions" / run)
    steps = []
    for v in announced:
        if v not in versions:
            continue
        s = Scorer.load(versions[v])
        card = s.cards[s.model_ids.index(target)]
        pred, cost, _ = predict(s.cards, te_emb, test.prompts)
        score, _ = arqgc(pred, cost, test.restrict(s.model_ids), s.model_ids)
        steps.append({"version": v, "labels": max(card.info.get("onboarding_labels", 0),
                                                  card.info.get("feedback_labels", 0)),
                      "onboarding": bool(card.info.get(ONBOARDING)), "arqgc": score,
                      "gap": score - offline})
    cost = {k.split(":", 1)[1]: v for k, v in _recorded_cost(part, got.routed).items()}
    spent = sum(c for pid, c in cost.items()
                if explored(f"{run}:{pid}", share) and got.routed[f"{run}:{pid}"].model_id
                == target)
    report = {"dataset": ds.name, "model": target, "explore_share": share, "streamed":
              f"train split, {len(part)} prompts, through Kafka", "routed": len(got.routed),
              "labels": len(got.feedback), "to_model": sum(
                  r.model_id == target for r in got.routed.values()),
              "explore_spend_share": spent / max(sum(cost.values()), 1e-12),
              "offline_arqgc": offline, "versions": steps,
              "reached": next((s for s in steps if s["gap"] >= -0.01), None)}
    (out_dir / "onboard-live.json").write_text(json.dumps(report, indent=1))
    return report


def _stream(kafka, root, dataset, part, run, share, every, graduate, tolerance, rate):
    settings, topic_env = run_topics(KafkaSettings(kafka_bootstrap=kafka), run)
    topics = sorted({model_topic(m) for m in part.model_ids})
    outputs = [settings.responses, settings.prompts_dlq, settings.feedback, *topics]
    asyncio.run(create_topics(settings, [settings.prompts_in, settings.decisions,
                                         settings.control, *outputs], settings.topic_partitions))
    env = {"IPR_KAFKA_BOOTSTRAP": kafka, **topic_env, "IPR_ROUTER_EXPLORE_SHARE": str(share)}
    feedback = {"IPR_FEEDBACK_MIN_LABELS": str(every), "IPR_FEEDBACK_GRADUATE_LABELS":
                str(graduate), "IPR_FEEDBACK_MIN_PUBLISH_INTERVAL_S": "0",
                "IPR_FEEDBACK_RECAL_INTERVAL_S": "30", "IPR_FEEDBACK_KEEP_VERSIONS": "1000"}
    services = start_services(root, dataset, env, run, "onboard", tolerance, feedback,
                              Path("build") / "logs" / run)
    try:
        asyncio.run(wait_until_routing(settings, settings, run, topics))
        got = asyncio.run(stream(settings, outputs, run, prompt_events(part, run), rate,
                                 settings, timeout=900.0))
        time.sleep(10.0)  # the last recalibrations publish
        announced = asyncio.run(announced_versions(settings))
    finally:
        for s in services:
            s.stop()
    return got, announced


def _versions(folder: Path) -> dict[str, Path]:
    return {read_manifest(p, verify=False).version: p for p in folder.iterdir()
            if (p / "manifest.json").is_file()} if folder.is_dir() else {}


def _recorded_cost(part, routed) -> dict[str, float]:
    """Each routed prompt's recorded cost on the model it went to."""
    row = {pid: i for i, pid in enumerate(part.ids)}
    out = {}
    for key, r in routed.items():
        i = row[key.split(":", 1)[1]]
        out[key] = float(part.cost[i, part.model_ids.index(r.model_id)])
    return out
