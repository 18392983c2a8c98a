"""The feedback service on a real Kafka: labels join their decisions, bad labels are dead-lettered
with the reason, and enough labels publish a recalibrated version on router.control."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import numpy as np
import orjson

from benchmarks.processes import Service
from benchmarks.traffic import produce
from ipr_model.serving.scorer import Scorer
from schemas import ModelUpdate, QualityFeedback, RoutingDecision, encode
from schemas.vectors import pack
from streams.kafka.local import free_port
from tests.integration.kafka_waits import read_to_end, send_sentinels
from tests.waits import WAIT_S, eventually, wait_for_log

MODEL = "gpt-4o-2024-08-06"


async def read_all(bootstrap, topic, until, timeout, pick=lambda m: orjson.loads(m.value)) -> list:
    """``pick(message)`` of every message of ``topic`` until ``until(picked)`` or the timeout."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await c.start()
    out, deadline = [], time.monotonic() + timeout
    try:
        while not until(out) and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=300)).values():
                out.extend(pick(m) for m in msgs)
    finally:
        await c.stop()
    return out


def feedback_env(bootstrap: str, unique: str, tmp_path) -> tuple[dict, dict]:
    """(the test's topics by setting, the feedback service's environment)."""
    topics = {k: f"{v}.{unique}" for k, v in {
        "IPR_DECISIONS": "router.decisions", "IPR_FEEDBACK": "feedback.quality",
        "IPR_PROMPTS_DLQ": "prompts.dlq", "IPR_CONTROL": "router.control"}.items()}
    env = {**topics, "IPR_KAFKA_BOOTSTRAP": bootstrap, "IPR_FEEDBACK_APP_ID": f"fb-{unique}",
           "IPR_FEEDBACK_DATA_DIR": str(tmp_path / "faust"),
           "IPR_FEEDBACK_VERSIONS_DIR": str(tmp_path / "versions")}
    return topics, env


async def table_keys(bootstrap: str, unique: str, table: str, at_least: int,
                     timeout: float) -> set:
    """The keys of a table's changelog, read until there are ``at_least`` or the timeout."""
    return set(await read_all(bootstrap, f"fb-{unique}-{table}-changelog",
                              lambda o: len(set(o)) >= at_least, timeout,
                              pick=lambda m: orjson.loads(m.key)))


async def stored_labels(bootstrap: str, unique: str, at_least: int, timeout: float) -> set:
    """The keys of the labels table's changelog (``model|prompt_id``)."""
    return await table_keys(bootstrap, unique, "labels", at_least, timeout)


async def decisions_read(bootstrap: str, unique: str, decisions: list[tuple[bytes, bytes]],
                         service: Service) -> None:
    """Until the service has read ``decisions``: it has joined its group, and their prompt ids
    are in its decision log (its changelog)."""
    want = {k.decode() for k, _ in decisions}
    # until these keys are there, not a count: the log may hold other decisions too (a router's
    # on the same topic), which a count would take for these
    got = set(await read_all(bootstrap, f"fb-{unique}-decision-log-changelog",
                             lambda o: want <= set(o), WAIT_S, pick=lambda m: orjson.loads(m.key)))
    assert want <= got, f"{len(want - got)} decisions not read: {service.log_tail()}"


async def dead_letters_past(bootstrap: str, topics: dict, unique: str) -> list[dict]:
    """The dead letters of every label sent so far: a sentinel (bad bytes, dead-lettered at once)
    goes to each partition of the feedback topic, and once each is dead-lettered, every label
    before it has been judged. Returns the dead letters other than the sentinels'."""
    keys = {k.decode() for k in await send_sentinels(
        bootstrap, topics["IPR_FEEDBACK"], lambda p: (f"{unique}-sentinel:{p}".encode(), b"{"))}
    dlq = topics["IPR_PROMPTS_DLQ"]

    async def letters() -> list[dict]:
        return [orjson.loads(r.value) for r in await read_to_end(bootstrap, [dlq])]

    async def sentinels_judged() -> bool:
        return keys <= {d["key"] for d in await letters()}

    await eventually(sentinels_judged, why=lambda: f"the sentinels {keys} not on {dlq}")
    return [d for d in await letters() if d["key"] not in keys]


def test_labels_recalibrate_and_bad_labels_are_dead_lettered(
    kafka_bootstrap, unique, small_artifacts, zeroeval, tmp_path
):
    topics, env = feedback_env(kafka_bootstrap, unique, tmp_path)
    scorer = Scorer.load(small_artifacts)
    test = zeroeval.split("test")
    task = test.tasks[0]
    idx = [i for i, t in enumerate(test.tasks) if t == task][:60]
    texts = [test.prompts[i] for i in idx]
    s = scorer.score(texts)
    j = scorer.model_ids.index(MODEL)
    decisions = []
    for n, (i, emb) in enumerate(zip(idx, s.embeddings, strict=True)):
        d = RoutingDecision(
            prompt_id=f"{unique}:{i}", model_id=MODEL if n < 50 else scorer.model_ids[0],
            tolerance=0.1, threshold=0.5,
            predicted_quality=dict(zip(scorer.model_ids, s.quality[n].tolist(), strict=True)),
            estimated_cost_usd=dict(zip(scorer.model_ids, s.cost[n].tolist(), strict=True)),
            router_version=scorer.version, routing_latency_ms=1.0, routed_at=time.time(),
            embedding=pack(emb))
        decisions.append((d.prompt_id.encode(), encode(d)))
    late = decisions[40:45]  # their labels are produced first: they wait for these decisions
    decisions = decisions[:40] + decisions[45:]
    good = [(f"{unique}:{i}".encode(), encode(QualityFeedback(
        prompt_id=f"{unique}:{i}", model_id=MODEL, quality=0.0, source="test", task=task)))
        for i in idx[:45]]
    bad = {
        "invalid_json": b"{nope",
        "validation": orjson.dumps(
            {"prompt_id": "p", "model_id": MODEL, "quality": 2, "source": "t"}
        ),
        "unknown_prompt": encode(QualityFeedback(
            prompt_id=f"{unique}:never", model_id=MODEL, quality=1, source="t")),
        "unknown_model": encode(QualityFeedback(
            prompt_id=f"{unique}:{idx[0]}", model_id="gpt-9", quality=1, source="t")),
        "wrong_model": encode(QualityFeedback(
            prompt_id=f"{unique}:{idx[55]}", model_id=MODEL, quality=1, source="t")),
    }
    service = Service(
        "feedback", ["feedback", "--artifacts", str(small_artifacts), "--min-labels", "30"],
        env, tmp_path,
    )
    try:
        async def scenario():
            await produce(kafka_bootstrap, topics["IPR_DECISIONS"], decisions, 0)
            await decisions_read(kafka_bootstrap, unique, decisions, service)
            await produce(kafka_bootstrap, topics["IPR_FEEDBACK"],
                          [(b"bad", v) for v in bad.values()] + good, 0)
            # No marker shows a label waiting for its decision: a short window, so that the
            # late labels are read before their decisions exist (the test holds either way).
            await asyncio.sleep(1)
            await produce(kafka_bootstrap, topics["IPR_DECISIONS"], late, 0)
            updates = await read_all(
                kafka_bootstrap, topics["IPR_CONTROL"], lambda o: len(o) >= 1, 120
            )
            stored = await stored_labels(kafka_bootstrap, unique, 45, 60)
            dead = await dead_letters_past(kafka_bootstrap, topics, unique)
            return dead, updates, stored

        dead, updates, stored = asyncio.run(scenario())
        assert service.alive(), service.log_tail()
    finally:
        service.stop()
    assert sorted(d["error_kind"] for d in dead) == sorted(bad)
    assert {f"{MODEL}|{unique}:{i}" for i in idx[:45]} <= stored  # the 5 late ones included
    assert len(updates) == 1, service.log_tail()
    update = ModelUpdate.model_validate(updates[0])
    new = Scorer.load(update.location)
    assert new.manifest.sha256 == update.sha256 and new.version != scorer.version
    probe = [test.prompts[i] for i in idx[45:60]]  # labels never seen for these
    assert new.score(probe).quality[:, j].mean() < scorer.score(probe).quality[:, j].mean() - 0.1
    assert_restart_resumes_from(update.version, small_artifacts, env, tmp_path)


def assert_restart_resumes_from(version: str, artifacts, env: dict, tmp_path) -> None:
    """A restarted service resumes from the version it announced, not from --artifacts."""
    again = Service("feedback-again", ["feedback", "--artifacts", str(artifacts)], env, tmp_path)
    try:
        wait_for_log(again, "feedback: consuming")
    finally:
        again.stop()
    assert f"; artifacts {version} (" in again.log_tail()


def test_a_failed_recalibration_is_logged_counted_and_the_service_goes_on(
    kafka_bootstrap, unique, small_artifacts, tmp_path
):
    """Decisions whose embeddings do not fit the artifacts (a router on another encoder): the
    recalibration they trigger fails; the labels stay, and the service keeps judging labels."""
    topics, env = feedback_env(kafka_bootstrap, unique, tmp_path)
    env["IPR_FEEDBACK_METRICS_PORT"] = str(port := free_port())
    scorer = Scorer.load(small_artifacts)
    ids = [f"{unique}:{i}" for i in range(12)]
    decisions = [(pid.encode(), encode(RoutingDecision(
        prompt_id=pid, model_id=MODEL, tolerance=0.1, threshold=0.5,
        predicted_quality={MODEL: 0.5}, estimated_cost_usd={MODEL: 0.001},
        router_version=scorer.version, routing_latency_ms=1.0, routed_at=time.time(),
        embedding=pack(np.full(8, 0.1, dtype=np.float32)))))  # 8-d: the artifacts are 384-d
        for pid in ids]
    labels = [(pid.encode(), encode(QualityFeedback(
        prompt_id=pid, model_id=MODEL, quality=1.0, source="test"))) for pid in ids[:10]]
    later = [(b"bad", b"{nope")]  # judged after the failure: the service still answers
    service = Service(
        "feedback", ["feedback", "--artifacts", str(small_artifacts), "--min-labels", "10"],
        env, tmp_path,
    )
    try:
        async def scenario():
            await produce(kafka_bootstrap, topics["IPR_DECISIONS"], decisions, 0)
            await decisions_read(kafka_bootstrap, unique, decisions, service)
            await produce(kafka_bootstrap, topics["IPR_FEEDBACK"], labels, 0)
            await asyncio.to_thread(wait_for_log, service, "recalibration of")
            await produce(kafka_bootstrap, topics["IPR_FEEDBACK"], later, 0)
            dead = await read_all(
                kafka_bootstrap, topics["IPR_PROMPTS_DLQ"], lambda o: len(o) >= 1, 60
            )
            stored = await stored_labels(kafka_bootstrap, unique, 10, 30)
            return dead, stored

        dead, stored = asyncio.run(scenario())
        assert service.alive(), service.log_tail()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
    finally:
        service.stop()
    log = service.log_tail(20000)
    assert f"recalibration of {MODEL} failed" in log and "its labels are kept" in log
    assert 'ipr_feedback_recalibrations_total{result="failed"} 1.0' in metrics
    assert [d["error_kind"] for d in dead] == ["invalid_json"]
    assert {f"{MODEL}|{pid}" for pid in ids[:10]} <= stored
    assert not (tmp_path / "versions").exists() or not any((tmp_path / "versions").iterdir())
