"""A label read while its decision still sits behind a backlog of decisions (as after a broker
outage: the label was produced long before it is read) waits for the decisions to be read; a
label whose prompt never had a decision is still dead-lettered once they have been."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson

from benchmarks.processes import Service
from benchmarks.traffic import produce
from schemas import QualityFeedback, RoutingDecision, encode
from schemas.vectors import pack
from tests.integration.kafka_waits import read_to_end
from tests.integration.streams.feedback.test_app import MODEL, feedback_env, stored_labels
from tests.waits import eventually

BACKLOG = 6000  # decisions produced at once; the service reads them for seconds
AGO_S = 60.0  # the labels were produced this long ago: their own wait is long over


async def produce_old(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        stamp = int((time.time() - AGO_S) * 1000)
        for key, value in events:
            await producer.send(topic, key=key, value=value, timestamp_ms=stamp)
        await producer.flush()
    finally:
        await producer.stop()


def test_a_label_behind_a_backlog_of_decisions_waits_for_its_decision(
    kafka_bootstrap, unique, small_artifacts, tmp_path
):
    topics, env = feedback_env(kafka_bootstrap, unique, tmp_path)
    ids = [f"{unique}:{i}" for i in range(BACKLOG)]
    template = RoutingDecision(
        prompt_id=ids[0], model_id=MODEL, tolerance=0.1, threshold=0.5,
        predicted_quality={MODEL: 0.5}, estimated_cost_usd={MODEL: 0.001},
        router_version="v", routing_latency_ms=1.0, routed_at=time.time(),
        embedding=pack(np.full(384, 0.1, dtype=np.float32)))
    decisions = [(pid.encode(), encode(template.model_copy(update={"prompt_id": pid})))
                 for pid in ids]
    last = ids[-5:]  # the last decisions of the backlog
    labels = [(pid.encode(), encode(QualityFeedback(
        prompt_id=pid, model_id=MODEL, quality=1.0, source="test")))
        for pid in [*last, f"{unique}:never"]]
    # min-labels above the count: no recalibration (its embeddings are not real ones)
    service = Service("feedback", ["feedback", "--artifacts", str(small_artifacts),
                                   "--min-labels", "100"], env, tmp_path)

    async def scenario():
        # A label that never has a decision is dead-lettered once the service's own start-up
        # grace is over (and its group joined): only then come the decisions and the labels.
        probe = f"{unique}:probe"
        await produce_old(kafka_bootstrap, topics["IPR_FEEDBACK"], [(probe.encode(), encode(
            QualityFeedback(prompt_id=probe, model_id=MODEL, quality=1.0, source="test")))])
        await eventually(lambda: dead_letters(1), why=service.log_tail)
        await produce(kafka_bootstrap, topics["IPR_DECISIONS"], decisions, 0)
        await produce_old(kafka_bootstrap, topics["IPR_FEEDBACK"], labels)
        stored = await stored_labels(kafka_bootstrap, unique, len(last), 120)
        await eventually(lambda: dead_letters(2), why=service.log_tail)
        return stored, await dead_letters(2)

    async def dead_letters(n: int) -> list[dict]:
        assert service.alive(), service.log_tail()
        dead = await read_to_end(kafka_bootstrap, [topics["IPR_PROMPTS_DLQ"]])
        return [orjson.loads(r.value) for r in dead] if len(dead) >= n else []

    try:
        stored, dead = asyncio.run(scenario())
        assert service.alive(), service.log_tail()
    finally:
        service.stop()
    assert {f"{MODEL}|{pid}" for pid in last} <= stored, service.log_tail()
    assert sorted((d["key"], d["error_kind"]) for d in dead) == [
        (f"{unique}:never", "unknown_prompt"), (f"{unique}:probe", "unknown_prompt")]
