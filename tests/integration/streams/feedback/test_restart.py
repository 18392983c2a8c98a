"""The feedback service killed (SIGKILL) after labels arrived: the restarted service recovers its
decision log, its labels and its models' last recalibrations from their changelogs, so labels that
arrive after the restart join decisions read before it, and the next recalibration is fitted on
the labels of both sides of the kill."""

from __future__ import annotations

import asyncio
import time

from benchmarks.processes import Service
from benchmarks.traffic import produce
from ipr_model.serving.scorer import Scorer
from schemas import QualityFeedback, RoutingDecision, encode
from schemas.vectors import pack
from tests.integration.kafka_waits import committed_to_end
from tests.integration.streams.feedback.test_app import (
    MODEL,
    dead_letters_past,
    feedback_env,
    read_all,
    stored_labels,
)

BEFORE, AFTER = 30, 20  # labels before and after the kill; together they make it due


def test_a_killed_feedback_service_recovers_its_labels_and_decisions(
    kafka_bootstrap, unique, small_artifacts, zeroeval, tmp_path
):
    topics, env = feedback_env(kafka_bootstrap, unique, tmp_path)
    scorer = Scorer.load(small_artifacts)
    test = zeroeval.split("test")
    n = BEFORE + AFTER
    s = scorer.score(test.prompts[:n])
    ids = [f"{unique}:{i}" for i in range(n)]
    decisions = [(pid.encode(), encode(RoutingDecision(
        prompt_id=pid, model_id=MODEL, tolerance=0.1, threshold=0.5,
        predicted_quality=dict(zip(scorer.model_ids, s.quality[i].tolist(), strict=True)),
        estimated_cost_usd=dict(zip(scorer.model_ids, s.cost[i].tolist(), strict=True)),
        router_version=scorer.version, routing_latency_ms=1.0, routed_at=time.time(),
        embedding=pack(s.embeddings[i])))) for i, pid in enumerate(ids)]
    labels = [(pid.encode(), encode(QualityFeedback(
        prompt_id=pid, model_id=MODEL, quality=0.0, source="test"))) for pid in ids]
    args = ["feedback", "--artifacts", str(small_artifacts), "--min-labels", str(n)]
    first = Service("feedback", args, env, tmp_path / "first")
    services = [first]

    async def scenario():
        await produce(kafka_bootstrap, topics["IPR_DECISIONS"], decisions, 0)
        await produce(kafka_bootstrap, topics["IPR_FEEDBACK"], labels[:BEFORE], 0)
        stored = await stored_labels(kafka_bootstrap, unique, BEFORE, 90)
        # the decisions are committed: the restarted service does not read them again
        await committed_to_end(kafka_bootstrap, f"fb-{unique}", topics["IPR_DECISIONS"])
        await asyncio.to_thread(first.kill)
        services.append(Service("feedback", args, env, tmp_path / "second"))
        await produce(kafka_bootstrap, topics["IPR_FEEDBACK"], labels[BEFORE:], 0)
        updates = await read_all(kafka_bootstrap, topics["IPR_CONTROL"], lambda o: o, 150)
        dead = await dead_letters_past(kafka_bootstrap, topics, unique)
        return stored, updates, dead

    try:
        stored, updates, dead = asyncio.run(scenario())
        alive = services[1].alive()
    finally:
        for service in services:
            service.stop()
    log = services[1].log_tail(20000)
    assert alive, log
    assert {f"{MODEL}|{pid}" for pid in ids[:BEFORE]} <= stored
    assert not dead, [d["error"] for d in dead]  # every label found its decision
    assert "recalibration of" not in first.log_tail(20000)
    assert f"recalibration of {MODEL} on {n} labels" in log  # the labels of before the kill too
    assert len(updates) == 1
