"""A label read while its decision still sits behind a backlog of decisions (as after a broker
outage: the label was produced long before it is read) waits for the decisions to be read; a
label whose prompt never had a decision is still dead-lettered once they have been, and soon
when some partitions of the decisions never had one."""

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
from tests.waits import eventually, wait_for_log

BACKLOG = 6000  # decisions produced at once; the service reads them for seconds
AGO_S = 60.0  # the labels were produced this long ago: their own wait is long over


async def produce_old(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]],
                      partition: int | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        stamp = int((time.time() - AGO_S) * 1000)
        for key, value in events:
            await producer.send(topic, key=key, value=value, timestamp_ms=stamp,
                                partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def decision(pid: str) -> bytes:
    return encode(RoutingDecision(
        prompt_id=pid, model_id=MODEL, tolerance=0.1, threshold=0.5,
        predicted_quality={MODEL: 0.5}, estimated_cost_usd={MODEL: 0.001},
        router_version="v", routing_latency_ms=1.0, routed_at=time.time(),
        embedding=pack(np.full(384, 0.1, dtype=np.float32))))


def label(pid: str) -> bytes:
    return encode(QualityFeedback(prompt_id=pid, model_id=MODEL, quality=1.0, source="test"))


def test_a_label_behind_a_backlog_of_decisions_waits_for_its_decision(
    kafka_bootstrap, unique, small_artifacts, tmp_path
):
    topics, env = feedback_env(kafka_bootstrap, unique, tmp_path)
    ids = [f"{unique}:{i}" for i in range(BACKLOG)]
    decisions = [(pid.encode(), decision(pid)) for pid in ids]
    last = ids[-5:]  # the last decisions of the backlog
    labels = [(pid.encode(), label(pid)) for pid in [*last, f"{unique}:never"]]
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


def test_partitions_that_never_had_a_decision_do_not_hold_a_label_past_its_wait(
    kafka_bootstrap, unique, small_artifacts, tmp_path
):
    # Every decision in partition 0, the last record there unreadable: the others are counted
    # from where their reading began (the log's start, no offset committed yet), and the
    # unreadable one as read, not left unknown until CATCH_UP_WAIT_S.
    topics, env = feedback_env(kafka_bootstrap, unique, tmp_path)
    known, never = f"{unique}:known", f"{unique}:never"
    service = Service("feedback", ["feedback", "--artifacts", str(small_artifacts),
                                   "--min-labels", "100"], env, tmp_path)

    async def scenario():
        await asyncio.to_thread(wait_for_log, service, "feedback: consuming")
        await produce_old(kafka_bootstrap, topics["IPR_DECISIONS"],
                          [(known.encode(), decision(known)), (b"junk", b"not json")],
                          partition=0)
        await produce_old(kafka_bootstrap, topics["IPR_FEEDBACK"],
                          [(pid.encode(), label(pid)) for pid in (never, known)], partition=0)
        # well before the label's wait (5 s) + CATCH_UP_WAIT_S (120 s) is over
        dead = await eventually(lambda: read_to_end(kafka_bootstrap, [topics["IPR_PROMPTS_DLQ"]]),
                                60, why=service.log_tail)
        dead = [orjson.loads(r.value) for r in dead]
        stored = await stored_labels(kafka_bootstrap, unique, 1, 30)
        return dead, stored

    try:
        dead, stored = asyncio.run(scenario())
        assert service.alive(), service.log_tail()
    finally:
        service.stop()
    assert [(d["key"], d["error_kind"]) for d in dead] == [(never, "unknown_prompt")], \
        service.log_tail()
    assert stored == {f"{MODEL}|{known}"}
