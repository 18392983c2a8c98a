"""A router on another host: it shares no filesystem with the feedback service, so it rebuilds
each announced version from the artifact-files topic into its own directory, adopts it, and
refuses a version whose files were tampered with on the topic while it goes on routing."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from benchmarks.processes import Service
from benchmarks.traffic import collect, produce
from ipr_model.artifacts.chunks import version_records
from ipr_model.artifacts.manifest import read_manifest
from ipr_model.serving.scorer import Scorer
from schemas import ModelUpdate, QualityFeedback, RoutingDecision, encode
from schemas.topics import parse_file_chunk_key
from schemas.vectors import pack
from tests.integration.streams.feedback.test_app import (
    MODEL,
    decisions_read,
    feedback_env,
    read_all,
)
from tests.integration.streams.router.test_hot_swap import new_version
from tests.integration.streams.router.test_router import (
    good_events,
    prepare_with_control,
    start_router,
)
from tests.waits import wait_for_log


def labelled(scorer: Scorer, zeroeval, run: str, n: int = 45):
    """Decisions that routed ``n`` prompts of one task to MODEL, and labels saying it failed
    them all: enough for the feedback service to publish a recalibrated version."""
    test = zeroeval.split("test")
    idx = [i for i, t in enumerate(test.tasks) if t == test.tasks[0]][:n]
    s = scorer.score([test.prompts[i] for i in idx])
    decisions, labels = [], []
    for k, i in enumerate(idx):
        pid = f"{run}:fb{i}"
        d = RoutingDecision(
            prompt_id=pid, model_id=MODEL, tolerance=0.1, threshold=0.5,
            predicted_quality=dict(zip(scorer.model_ids, s.quality[k].tolist(), strict=True)),
            estimated_cost_usd=dict(zip(scorer.model_ids, s.cost[k].tolist(), strict=True)),
            router_version=scorer.version, routing_latency_ms=1.0, routed_at=time.time(),
            embedding=pack(s.embeddings[k]))
        decisions.append((pid.encode(), encode(d)))
        labels.append((pid.encode(), encode(QualityFeedback(
            prompt_id=pid, model_id=MODEL, quality=0.0, source="test", task=test.tasks[0]))))
    return decisions, labels


def tampered_records(v3, parent) -> list[tuple[bytes, bytes]]:
    """v3's records with the body of its one new file changed (its key, the content's sha256,
    kept)."""
    notes = v3.data["files"]["NOTES.txt"]
    return [(k, b"not what the manifest says\n" if parse_file_chunk_key(k)[0] == notes else v)
            for k, v in version_records(v3, parent)]


def test_a_router_on_another_host_adopts_versions_from_kafka_and_refuses_a_tampered_one(
    kafka_bootstrap, unique, small_artifacts, zeroeval, texts, tmp_path, monkeypatch
):
    control, settings, model_topics = prepare_with_control(
        kafka_bootstrap, unique, small_artifacts, monkeypatch)
    files_topic = f"router.artifacts.{unique}"
    fb_topics, fb_env = feedback_env(kafka_bootstrap, unique, tmp_path / "feedback-host")
    assert fb_topics["IPR_CONTROL"] == control
    received = tmp_path / "router-host" / "received"
    own = tmp_path / "router-host" / "artifacts"
    shutil.copytree(small_artifacts, own)  # the router's own copy of the base version
    for k, v in {"IPR_ARTIFACTS_TOPIC": files_topic, "IPR_ROUTER_VERSIONS_FROM": "kafka",
                 "IPR_ROUTER_VERSIONS_DIR": str(received)}.items():
        monkeypatch.setenv(k, v)
    base = read_manifest(own)
    decisions, labels = labelled(Scorer.load(own), zeroeval, unique)
    feedback = Service("feedback", ["feedback", "--artifacts", str(small_artifacts),
                                    "--min-labels", "30"], fb_env, tmp_path)
    router = start_router("router", own, kafka_bootstrap, unique, tmp_path)
    run = unique

    async def route(first: int, n: int) -> list[str]:
        events = good_events(texts, run, first + n)[first:]
        await produce(kafka_bootstrap, settings.prompts_in, events, 0)
        got = await collect(kafka_bootstrap, model_topics, run,
                            lambda c: all(k.decode() in c.routed for k, _ in events), 120, settings)
        return [got.routed[k.decode()].router_version for k, _ in events]

    async def recalibrated() -> ModelUpdate:
        await produce(kafka_bootstrap, fb_topics["IPR_DECISIONS"], decisions, 0)
        await decisions_read(kafka_bootstrap, unique, decisions, feedback)
        await produce(kafka_bootstrap, fb_topics["IPR_FEEDBACK"], labels, 0)
        updates = await read_all(kafka_bootstrap, control, lambda o: len(o) >= 1, 180)
        assert updates, feedback.log_tail()
        return ModelUpdate.model_validate(updates[0])

    try:
        wait_for_log(router, "router: consuming", 180)
        assert set(asyncio.run(route(0, 20))) == {base.version}
        v2 = asyncio.run(recalibrated())
        wait_for_log(router, f"-> {v2.version}", 120)
        assert set(asyncio.run(route(20, 40))) == {v2.version}

        mine = read_manifest(received / v2.version)  # rebuilt here, every file verified
        assert mine.sha256 == v2.sha256  # and the feedback service wrote its own elsewhere:
        assert Path(v2.location).resolve().is_relative_to((tmp_path / "feedback-host").resolve())
        assert (mine.root / "encoder/model.onnx").stat().st_ino == \
            (own / "encoder/model.onnx").stat().st_ino  # linked from the router's own copy

        v3 = new_version(mine.root, tmp_path / "elsewhere" / "v3")  # readable, but forbidden
        announce = ModelUpdate(version=v3.version, location=str(v3.root), sha256=v3.sha256,
                               models=v3.models)
        asyncio.run(produce(kafka_bootstrap, files_topic, tampered_records(v3, mine), 0))
        asyncio.run(produce(kafka_bootstrap, control, [(b"artifacts", encode(announce))], 0))
        wait_for_log(router, "refused artifact version", 120)
        assert set(asyncio.run(route(60, 40))) == {v2.version}
        assert router.alive(), router.log_tail()
    finally:
        router.stop()
        feedback.stop()
    log = router.log_tail(50_000)
    assert "NOTES.txt from the topic is tampered or corrupt" in log
    assert f"keeping {v2.version}" in log and not (received / v3.version).exists()
    assert not any(t[:40] in log for t in texts[:100])  # no prompt text is ever logged
