"""A label read while its decision still sits behind a backlog of decisions (as after a broker
outage: the label was produced long before it is read) waits for the decisions to be read; a
label whose prompt never had a decision is still dead-lettered once they have been, and soon
when some partitions of the decisions never had one."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from schemas import QualityFeedback, RoutingDecision, encode
from schemas.vectors import pack
from streams.harness.processes import Service
from streams.harness.traffic import produce
from tests.integration.streams.feedback.test_app import MODEL, feedback_env, read_all, stored_labels

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


async def wait_consuming(service: Service) -> None:
    deadline = time.monotonic() + 90
    while "feedback: consuming" not in service.log_tail():
        assert service.alive() and time.monotonic() < deadline, service.log_tail()
        await asyncio.sleep(0.3)


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
        await wait_consuming(service)
        await asyncio.sleep(6)  # the group is joined; the service's own start-up grace is over
        await produce(kafka_bootstrap, topics["IPR_DECISIONS"], decisions, 0)
        await produce_old(kafka_bootstrap, topics["IPR_FEEDBACK"], labels)
        stored = await stored_labels(kafka_bootstrap, unique, len(last), 120)
        dead = await read_all(kafka_bootstrap, topics["IPR_PROMPTS_DLQ"], lambda o: len(o) >= 1,
                              60)
        return stored, dead

    try:
        stored, dead = asyncio.run(scenario())
        assert service.alive(), service.log_tail()
    finally:
        service.stop()
    assert {f"{MODEL}|{pid}" for pid in last} <= stored, service.log_tail()
    assert [(d["key"], d["error_kind"]) for d in dead] == [(f"{unique}:never", "unknown_prompt")]


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
        await wait_consuming(service)
        await produce_old(kafka_bootstrap, topics["IPR_DECISIONS"],
                          [(known.encode(), decision(known)), (b"junk", b"not json")],
                          partition=0)
        await produce_old(kafka_bootstrap, topics["IPR_FEEDBACK"],
                          [(pid.encode(), label(pid)) for pid in (never, known)], partition=0)
        # well before the label's wait (5 s) + CATCH_UP_WAIT_S (120 s) is over
        dead = await read_all(kafka_bootstrap, topics["IPR_PROMPTS_DLQ"], lambda o: len(o) >= 1,
                              60)
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
