"""The router service against a real Kafka: delivery, dead letters, crashes and scale-out.

Each test runs real router processes (``ipr router``: Faust, the real encoder and adapters) on
topics of its own; model topics are shared names, so every count filters on the test's own
prompt-id prefix.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson

from benchmarks.processes import Service, router_env
from benchmarks.traffic import collect, produce
from ipr_model.serving.rule import route_batch
from schemas import PromptRequest, encode
from schemas.topics import model_topic
from streams.kafka.admin import create_topics
from streams.kafka.settings import KafkaSettings
from tests.integration.kafka_waits import committed_to_end, group_members

TEXT_CHARS = 240  # real prompts, cut short so a thousand of them route in seconds


def topics_for(unique: str) -> dict[str, str]:
    return {
        "IPR_PROMPTS_IN": f"prompts.in.{unique}",
        "IPR_PROMPTS_DLQ": f"prompts.dlq.{unique}",
        "IPR_DECISIONS": f"router.decisions.{unique}",
    }


def settings_for(bootstrap: str, unique: str) -> KafkaSettings:
    t = topics_for(unique)
    return KafkaSettings(
        kafka_bootstrap=bootstrap, prompts_in=t["IPR_PROMPTS_IN"],
        prompts_dlq=t["IPR_PROMPTS_DLQ"], decisions=t["IPR_DECISIONS"],
    )


def start_router(name: str, artifacts: Path, bootstrap: str, unique: str, tmp: Path) -> Service:
    env = router_env(bootstrap, f"router-{unique}", **topics_for(unique))
    env["IPR_ROUTER_DATA_DIR"] = str(tmp / f"faust-{name}")
    return Service(name, ["router", "--artifacts", str(artifacts), "--tolerance", "0.3"], env, tmp)


def good_events(texts: list[str], run: str, n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        req = PromptRequest(
            prompt_id=f"{run}:{i}", text=texts[i % len(texts)][:TEXT_CHARS],
            tolerance=[None, 0.0, 0.5, 1.0][i % 4],
        )
        out.append((req.prompt_id.encode(), encode(req)))
    return out


SECRET = "a user's private prompt, never to be logged"


def bad_events(run: str, n: int) -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """``n`` malformed events of six kinds; returns them and the expected error kind per id."""
    makers = [
        (lambda pid: b"{not json", "invalid_json"),
        (lambda pid: orjson.dumps({"prompt_id": pid}), "validation"),  # missing text
        (lambda pid: orjson.dumps({"prompt_id": pid, "text": "hi", "tolerance": 2}), "validation"),
        (lambda pid: orjson.dumps({"prompt_id": pid, "text": "x" * 40_000}), "validation"),
        (lambda pid: orjson.dumps(
            {"prompt_id": pid, "text": "hi", "allowed_models": ["no-such-model"]}
        ), "unknown_model"),
        (lambda pid: orjson.dumps({"prompt_id": pid, "text": "hi", "colour": "red"}), "validation"),
        (lambda pid: orjson.dumps({"prompt_id": pid, "text": SECRET, "tolerance": "0.5"}),
         "validation"),  # numbers must be numbers
        (lambda pid: orjson.dumps({"prompt_id": pid, "text": SECRET}).replace(
            b"}", b', "metadata": {"k": ' + b"[" * 300 + b"]" * 300 + b"}}"), "too_deep"),
    ]
    events, expected = [], {}
    for i in range(n):
        pid = f"{run}:bad{i}"
        make, kind = makers[i % len(makers)]
        events.append((pid.encode(), make(pid)))
        expected[pid] = kind
    pid = f"{run}:bad-key"  # a key other than its prompt_id
    events.append((f"{run}:other".encode(), orjson.dumps({"prompt_id": pid, "text": SECRET})))
    expected[f"{run}:other"] = "key_mismatch"
    return events, expected


def interleave(good, bad):
    out, step = list(good), max(1, len(good) // max(1, len(bad)))
    for j, ev in enumerate(bad):
        out.insert(min(len(out), (j + 1) * step + j), ev)
    return out


async def stream_and_collect(bootstrap, settings, run, events, model_topics, expect, timeout=240.0):
    outputs = [settings.prompts_dlq, *model_topics]
    done = lambda c: len(c.routed) + len(c.dead) >= expect  # noqa: E731
    collector = asyncio.create_task(collect(bootstrap, outputs, run, done, timeout, settings))
    await produce(bootstrap, settings.prompts_in, events, 0)
    return await asyncio.wait_for(collector, timeout + 30)


def prepare(bootstrap, unique, artifacts):
    from ipr_model.artifacts.manifest import read_manifest

    settings = settings_for(bootstrap, unique)
    models = read_manifest(artifacts).models
    model_topics = sorted({model_topic(m) for m in models})
    asyncio.run(create_topics(
        bootstrap, [settings.prompts_in, settings.prompts_dlq, settings.decisions, *model_topics],
        partitions=4,
    ))
    return settings, model_topics


def prepare_with_control(bootstrap, unique, artifacts, monkeypatch):
    """``prepare``, with a control topic of the test's own (created, and set for the router)."""
    control = f"router.control.{unique}"
    for k, v in {**topics_for(unique), "IPR_CONTROL": control}.items():
        monkeypatch.setenv(k, v)
    settings, model_topics = prepare(bootstrap, unique, artifacts)
    asyncio.run(create_topics(bootstrap, [control], partitions=1))
    return control, settings, model_topics


def test_every_valid_prompt_routed_every_bad_one_dead_lettered(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path
):
    settings, model_topics = prepare(kafka_bootstrap, unique, small_artifacts)
    run = unique
    good = good_events(texts, run, 950)
    bad, expected_kind = bad_events(run, 50)
    router = start_router("router", small_artifacts, kafka_bootstrap, unique, tmp_path)
    try:
        got = asyncio.run(stream_and_collect(
            kafka_bootstrap, settings, run, interleave(good, bad), model_topics, 1001
        ))
        assert router.alive(), router.log_tail()
        # Every batch is acknowledged once delivered, so the group's commits reach the end.
        asyncio.run(committed_to_end(kafka_bootstrap, f"router-{unique}", settings.prompts_in))
    finally:
        router.stop()

    good_ids = {k.decode() for k, _ in good}
    assert set(got.routed) == good_ids
    assert set(got.dead) == set(expected_kind)
    assert got.routed_dupes == 0
    assert {pid: d.error_kind for pid, d in got.dead.items()} == expected_kind
    assert all(d.source_topic == settings.prompts_in and d.error for d in got.dead.values())
    # Each dead letter is logged by its key and kind, never its text; the log is plain text.
    log = router.log_tail(1_000_000)
    assert all(f"dead letter {kind}: key {key} at " in log for key, kind in expected_kind.items())
    assert SECRET not in log and "\x1b" not in log
    assert f"router: consuming {settings.prompts_in} from {kafka_bootstrap} as group " in log

    # The right topic: each prompt's model is the rule's choice on the scores it carries, and
    # those scores are the ones the scorer gives in this process.
    from ipr_model.serving.scorer import Scorer

    scorer = Scorer.load(small_artifacts)
    ids = scorer.model_ids
    sample = sorted(got.routed)[:200]
    routed = [got.routed[k] for k in sample]
    q = np.array([[r.predicted_quality[m] for m in ids] for r in routed])
    c = np.array([[r.estimated_cost_usd[m] for m in ids] for r in routed])
    chosen, _ = route_batch(q, c, np.array([r.tolerance for r in routed]), ids)
    assert [ids[i] for i in chosen] == [r.model_id for r in routed]
    local = scorer.score([r_text(texts, k) for k in sample])
    assert np.allclose(local.quality, q, atol=1e-4)
    assert {r.tolerance for r in got.routed.values()} == {0.0, 0.3, 0.5, 1.0}
    assert all(r.router_version == scorer.version for r in routed)


def r_text(texts: list[str], key: str) -> str:
    i = int(key.rsplit(":", 1)[1])
    return texts[i % len(texts)][:TEXT_CHARS]


def test_sigkill_mid_stream_then_restart_loses_nothing(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path
):
    settings, model_topics = prepare(kafka_bootstrap, unique, small_artifacts)
    run = unique
    good = good_events(texts, run, 800)
    router = start_router("router-a", small_artifacts, kafka_bootstrap, unique, tmp_path)

    async def scenario():
        outputs = [settings.prompts_dlq, *model_topics]
        collector = asyncio.create_task(
            collect(kafka_bootstrap, outputs, run, lambda c: len(c.routed) >= 800, 300, settings)
        )
        await produce(kafka_bootstrap, settings.prompts_in, good, 0)
        # Kill the router once it has routed part of the stream.
        probe = await collect(
            kafka_bootstrap, model_topics, run, lambda c: len(c.routed) >= 200, 120, settings
        )
        assert len(probe.routed) >= 200, router.log_tail()
        router.kill()
        killed_at = len(probe.routed)
        restarted = start_router("router-b", small_artifacts, kafka_bootstrap, unique, tmp_path)
        try:
            got = await asyncio.wait_for(collector, 330)
        finally:
            restarted.stop()
        return got, killed_at

    try:
        got, killed_at = asyncio.run(scenario())
    finally:
        router.stop()
    assert set(got.routed) == {k.decode() for k, _ in good}
    assert not got.dead
    # Duplicates come only from records routed after the last commit before the kill: bounded by
    # what one commit interval (1 s) plus one batch carries, and never more than was routed.
    print(f"routed before kill: {killed_at}, duplicates after restart: {got.routed_dupes}")
    assert got.routed_dupes <= killed_at


def test_two_routers_one_stopped_mid_stream_loses_nothing(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path
):
    settings, model_topics = prepare(kafka_bootstrap, unique, small_artifacts)
    run = unique
    good = good_events(texts, run, 800)
    a = start_router("router-a", small_artifacts, kafka_bootstrap, unique, tmp_path)
    b = start_router("router-b", small_artifacts, kafka_bootstrap, unique, tmp_path)

    async def scenario():
        outputs = [settings.prompts_dlq, *model_topics]
        collector = asyncio.create_task(
            collect(kafka_bootstrap, outputs, run, lambda c: len(c.routed) >= 800, 300, settings)
        )
        # both have joined the group, and a rebalance has shared its partitions, before the stream
        await group_members(kafka_bootstrap, f"router-{unique}", 2)
        await produce(kafka_bootstrap, settings.prompts_in, good, 0)
        probe = await collect(
            kafka_bootstrap, model_topics, run, lambda c: len(c.routed) >= 200, 120, settings
        )
        assert len(probe.routed) >= 200
        a.stop()  # graceful: its partitions move to b
        return await asyncio.wait_for(collector, 330)

    try:
        got = asyncio.run(scenario())
    finally:
        a.stop()
        b.stop()
    assert set(got.routed) == {k.decode() for k, _ in good}
    assert not got.dead
