"""Shadow evaluation on the real broker: a candidate version (one model's correction differs)
scores in shadow beside the live one under load, routes nothing, is reported on the same prompts,
and is promoted between batches with ``ipr shadow start | stop | promote | report``."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np

from benchmarks.traffic import collect, produce
from ipr_model.artifacts.manifest import read_manifest
from ipr_model.serving.scorer import Scorer
from ipr_model.training.refit import recalibrate
from schemas import PromptRequest, QualityFeedback, RoutingDecision, decode, encode
from streams.control.topic import topic_history
from streams.kafka.admin import create_topics
from streams.router.routing import Record, route_records
from tests.integration.kafka_waits import seen
from tests.integration.streams.router.test_router import (
    good_events,
    prepare_with_control,
    start_router,
)
from tests.waits import eventually, wait_for_log

TOLERANCE = 0.3  # start_router's --tolerance


def ipr(*args: str) -> str:
    """Run ``ipr ARGS`` (the environment's topics) and return what it printed."""
    done = subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def expected_models(scorer: Scorer, events) -> dict[str, str]:
    """The model each prompt gets from ``scorer`` alone, in this process (no shadow)."""
    records = [Record("in", 0, i, k, v) for i, (k, v) in enumerate(events)]
    got = route_records(records, scorer, TOLERANCE)
    assert not got.dead and len(got.routed) == len(events)
    return {r.prompt.prompt_id: r.prompt.model_id for r in got.routed}


def candidate(live: Scorer, texts: list[str], events, out):
    """The live version with one model's correction: labels say the model most often chosen
    (below τ = 1, where quality is not looked at) failed every one of these prompts."""
    want = expected_models(live, events)
    taus = {r.prompt_id: r.tolerance for r in (decode(PromptRequest, v) for _, v in events)}
    model = Counter(m for pid, m in want.items() if taus[pid] != 1.0).most_common(1)[0][0]
    emb = live.score(texts).embeddings
    result = recalibrate(live.manifest.root, {model: (emb, np.zeros(len(texts)))}, out)
    assert result.version is not None, result.models
    return read_manifest(out), model


async def read_until(settings, topic: str, run: str, n: int) -> dict[str, RoutingDecision]:
    """The decisions of this run on ``topic`` (last per prompt id), once there are ``n``."""
    got: dict[str, RoutingDecision] = {}

    async def enough() -> bool:
        got.clear()
        for m in await topic_history(settings, topic):
            if (m.key or b"").decode().startswith(f"{run}:"):
                got[m.key.decode()] = decode(RoutingDecision, m.value)
        return len(got) >= n

    await eventually(enough, interval=1.0, why=lambda: f"{len(got)} of {n} on {topic}")
    return got


def labels_for(run: str, first: int, pairs: dict[str, tuple[str, str]]):
    """Quality labels on ``first`` prompts for the live choice (1, 0, 1, ...) and, where the
    shadow chose another model, one for the shadow's choice too (0.5)."""
    out = []
    for i in range(first):
        pid = f"{run}:{i}"
        live, shadow = pairs[pid]
        out.append(QualityFeedback(prompt_id=pid, model_id=live, quality=float(i % 2 == 0),
                                   source="test"))
        if shadow != live:
            out.append(QualityFeedback(prompt_id=pid, model_id=shadow, quality=0.5,
                                       source="test"))
    return out


def test_a_version_in_shadow_routes_nothing_is_reported_and_is_promoted_between_batches(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path, monkeypatch
):
    control, settings, model_topics = prepare_with_control(
        kafka_bootstrap, unique, small_artifacts, monkeypatch)
    shadow_topic, feedback_topic = f"router.shadow.{unique}", f"feedback.quality.{unique}"
    monkeypatch.setenv("IPR_SHADOW", shadow_topic)
    monkeypatch.setenv("IPR_FEEDBACK", feedback_topic)
    monkeypatch.setenv("IPR_KAFKA_BOOTSTRAP", kafka_bootstrap)  # for the ipr commands
    settings = settings.model_copy(update={"shadow": shadow_topic, "feedback": feedback_topic,
                                           "control": control})
    asyncio.run(create_topics(kafka_bootstrap, [feedback_topic], partitions=4))
    run, n1, n_off, n2 = unique, 200, 40, 400
    events = good_events(texts, run, n1 + n_off + n2)
    phase_a, phase_off, phase_b = events[:n1], events[n1:n1 + n_off], events[n1 + n_off:]
    live = Scorer.load(small_artifacts)
    v1 = live.manifest
    v2, corrected = candidate(live, [t[:240] for t in texts[:n1]], phase_a, tmp_path / "v2")
    want_v1 = expected_models(live, events)
    want_v2 = expected_models(Scorer.load(v2.root), events)
    assert sum(want_v1[k.decode()] != want_v2[k.decode()] for k, _ in phase_a) >= 10

    # Started before the router: a starting router picks the shadow up from router.control.
    assert v2.version in ipr("shadow", "start", str(v2.root))
    router = start_router("router", small_artifacts, kafka_bootstrap, unique, tmp_path)
    swapped_in = f"swapped shadow artifacts None -> {v2.version}"
    try:
        wait_for_log(router, swapped_in, 180)
        wait_for_log(router, "router: consuming", 60)

        async def stream(batch, rate, during=None):
            want = {k.decode() for k, _ in batch}
            collector = asyncio.create_task(collect(
                kafka_bootstrap, model_topics, run, lambda c: want <= set(c.routed), 240,
                settings))
            streaming = asyncio.create_task(produce(kafka_bootstrap, settings.prompts_in,
                                                    batch, rate))
            if during is not None:  # mid-stream: once part of the batch is routed
                await seen(kafka_bootstrap, model_topics, run, settings,
                           lambda c: len(want & set(c.routed)) >= 50, "50 prompts routed")
                await asyncio.get_running_loop().run_in_executor(None, during)
            await streaming
            return await asyncio.wait_for(collector, 270)

        # Under load with the shadow on: every prompt routed by the live version, as alone.
        got_a = asyncio.run(stream(phase_a, 25))
        shadow_a = asyncio.run(read_until(settings, shadow_topic, run, n1))
        ipr("shadow", "stop")
        wait_for_log(router, "shadow stopped", 60)
        asyncio.run(stream(phase_off, 0))
        ipr("shadow", "start", str(v2.root))  # on the running router, then promoted mid-stream
        wait_for_log(router, swapped_in, count=2)
        got_b = asyncio.run(stream(phase_b, 25, during=lambda: ipr("shadow", "promote")))
        wait_for_log(router, f"swapped artifacts {v1.version} -> {v2.version}", 60)
        assert router.alive(), router.log_tail()
        decisions = asyncio.run(read_until(settings, settings.decisions, run, len(events)))
        shadow_all = asyncio.run(read_until(settings, shadow_topic, run, n1))
        pairs = {pid: (decisions[pid].model_id, d.model_id) for pid, d in shadow_a.items()}
        labels = labels_for(run, 40, pairs)
        asyncio.run(produce(kafka_bootstrap, feedback_topic,
                            [(f.prompt_id.encode(), encode(f)) for f in labels], 0))
        report = json.loads(ipr("shadow", "report", "--json"))
    finally:
        router.stop()
    versions = (v1.version, v2.version)
    check_routing(versions, phase_a, phase_off, phase_b, got_a, got_b, want_v1, want_v2,
                  decisions, shadow_a, shadow_all)
    check_report(report, decisions, shadow_all, labels, pairs, corrected, n1)


def check_routing(versions, phase_a, phase_off, phase_b, got_a, got_b, want_v1, want_v2,
                  decisions, shadow_a, shadow_all) -> None:
    v1, v2 = versions
    # 0 routing changes while in shadow: the live version, the model it gives alone.
    routed_a = {k.decode(): got_a.routed[k.decode()] for k, _ in phase_a}
    assert {r.router_version for r in routed_a.values()} == {v1}
    assert {pid: r.model_id for pid, r in routed_a.items()} == {
        k.decode(): want_v1[k.decode()] for k, _ in phase_a}
    # The shadow scored every one of them, as the candidate does alone, and routed none.
    assert set(shadow_a) == set(routed_a)
    assert all(d.router_version == v2 and d.shadow_of == v1
               for d in shadow_a.values())
    assert {pid: d.model_id for pid, d in shadow_a.items()} == {
        pid: want_v2[pid] for pid in shadow_a}
    assert not {k.decode() for k, _ in phase_off} & set(shadow_all)  # stopped: none

    # Promotion: between batches (a batch's decisions share routed_at), once, for good.
    routed_b = [got_b.routed[k.decode()] for k, _ in phase_b]
    versions = [r.router_version for r in routed_b]
    assert set(versions) == {v1, v2} and versions[-30:] == [v2] * 30
    assert all(r.model_id == (want_v1 if r.router_version == v1 else want_v2)[r.prompt_id]
               for r in routed_b)
    batches = defaultdict(set)
    for d in decisions.values():
        batches[d.routed_at].add(d.router_version)
    assert all(len(v) == 1 for v in batches.values())
    assert all(decisions[pid].router_version == v1 for pid in shadow_all)



def check_report(report, decisions, shadow_all, labels, pairs, corrected, n1) -> None:
    """The report's counts are the topics'."""
    paired = [(decisions[pid], d) for pid, d in shadow_all.items()]
    assert report["paired"] == len(shadow_all) >= n1 and report["unpaired_shadow"] == 0
    assert report["agreed"] == sum(a.model_id == b.model_id for a, b in paired) < len(paired)
    assert report["live"]["models"] == dict(Counter(a.model_id for a, _ in paired))
    assert report["shadow"]["models"] == dict(Counter(b.model_id for _, b in paired))
    assert report["shadow"]["models"].get(corrected, 0) < report["live"]["models"][corrected]
    assert np.isclose(report["live"]["estimated_cost_usd"],
                      sum(a.estimated_cost_usd[a.model_id] for a, _ in paired))
    assert np.isclose(report["shadow"]["estimated_cost_usd"],
                      sum(b.estimated_cost_usd[b.model_id] for _, b in paired))
    live_labels = [f.quality for f in labels if pairs[f.prompt_id][0] == f.model_id]
    assert report["live"]["labelled"] == 40
    assert np.isclose(report["live"]["quality"], np.mean(live_labels))
    shadow_labels = [f.quality for f in labels if pairs[f.prompt_id][1] == f.model_id]
    assert report["shadow"]["labelled"] == len(shadow_labels) == 40
    assert np.isclose(report["shadow"]["quality"], np.mean(shadow_labels))


def test_a_router_on_another_host_gets_the_shadow_version_from_the_artifact_files_topic(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path, monkeypatch
):
    control, settings, model_topics = prepare_with_control(
        kafka_bootstrap, unique, small_artifacts, monkeypatch)
    own, received = tmp_path / "router-host" / "artifacts", tmp_path / "router-host" / "received"
    shutil.copytree(small_artifacts, own)
    shadow_topic = f"router.shadow.{unique}"
    for k, v in {"IPR_SHADOW": shadow_topic, "IPR_KAFKA_BOOTSTRAP": kafka_bootstrap,
                 "IPR_ARTIFACTS_TOPIC": f"router.artifacts.{unique}",
                 "IPR_ROUTER_VERSIONS_FROM": "kafka",
                 "IPR_ROUTER_VERSIONS_DIR": str(received)}.items():
        monkeypatch.setenv(k, v)
    run = unique
    events = good_events(texts, run, 60)
    live = Scorer.load(own)
    v2, _ = candidate(live, [t[:240] for t in texts[:40]], events[:40], tmp_path / "cand" / "v2")
    v3, _ = candidate(live, [t[:240] for t in texts[40:60]], events[40:], tmp_path / "cand" / "v3")
    router = start_router("router", own, kafka_bootstrap, unique, tmp_path)

    async def route(batch, total: int):
        """Route ``batch``; the run's shadow decisions once there are ``total`` (all so far)."""
        await produce(kafka_bootstrap, settings.prompts_in, batch, 0)
        await collect(kafka_bootstrap, model_topics, run,
                      lambda c: all(k.decode() in c.routed for k, _ in batch), 120, settings)
        return await read_until(settings, shadow_topic, run, total)

    try:
        wait_for_log(router, "router: consuming", 180)
        ipr("shadow", "start", str(v2.root), "--parent", str(own))
        wait_for_log(router, f"swapped shadow artifacts None -> {v2.version}", 120)
        first = asyncio.run(route(events[:30], 30))
        ipr("shadow", "start", str(v3.root))  # its files were never sent: refused, v2 kept
        wait_for_log(router, "refused shadow artifact version", 120)
        second = asyncio.run(route(events[30:], 60))
        assert router.alive(), router.log_tail()
    finally:
        router.stop()
    assert read_manifest(received / v2.version).sha256 == v2.sha256  # rebuilt here, verified
    assert {d.router_version for d in first.values()} == {v2.version} and len(first) == 30
    assert {d.router_version for d in second.values()} == {v2.version} and len(second) == 60
    assert f"keeping {v2.version}" in router.log_tail(50_000)
