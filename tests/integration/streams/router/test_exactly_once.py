"""Exactly-once routing (IPR_ROUTER_EXACTLY_ONCE) on the real broker: a router killed (SIGKILL)
mid-stream and replaced leaves every prompt routed once on the model topics, and decided once by
the version in shadow, read with read_committed; at-least-once, the same kill routes again what
came since its last commit."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections import Counter

import pytest

from benchmarks.processes import Service
from benchmarks.traffic import Collected, produce, wait_until_routing
from ipr_model.artifacts.manifest import read_manifest, write_manifest
from streams.kafka.settings import KafkaSettings
from tests.integration.kafka_waits import collected_to_end, routed_past, seen
from tests.integration.streams.kafka import system
from tests.waits import wait_for_log

N, RATE = 240, 40.0


def prepare(monkeypatch, bootstrap, unique, artifacts, data, tmp_path, **env):
    """The router's environment (plus ``env``), its topics, the prompts and its command."""
    for k, v in {"IPR_KAFKA_BOOTSTRAP": bootstrap, "IPR_ROUTER_APP_ID": f"router-{unique}",
                 "IPR_ROUTER_WEB_ENABLED": "false", "IPR_ROUTER_DATA_DIR": str(tmp_path / "faust"),
                 **env}.items():
        monkeypatch.setenv(k, v)
    settings = KafkaSettings()
    _, model_topics = system.prepare(settings, artifacts)
    return (settings, model_topics, system.prompt_events(data, unique, N),
            ["router", "--artifacts", str(artifacts)])


def shadow_copy(artifacts, tmp_path):
    """The artifacts as a version of their own, started in shadow (before any router)."""
    dst = tmp_path / "shadow-version"
    shutil.copytree(artifacts, dst, ignore=shutil.ignore_patterns("manifest.json"))
    (dst / "NOTES.txt").write_text("the live version, as a shadow of its own\n")
    old = read_manifest(artifacts)
    write_manifest(dst, old.models, old.carried_over(), parent=old.version)
    done = subprocess.run([sys.executable, "-m", "streams.cli", "shadow", "start", str(dst)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return read_manifest(dst).version


async def shadow_counts(settings, run: str) -> Counter:
    """How many decisions each of the run's prompts has on the shadow topic, read_committed."""
    from tests.integration.kafka_waits import read_to_end

    return Counter(r.key.decode() for r in await read_to_end(settings, [settings.shadow],
                                                              "read_committed")
                   if (r.key or b"").decode().startswith(f"{run}:"))


@pytest.mark.parametrize("exactly_once", [True, False])
def test_a_router_killed_mid_stream_routes_each_prompt_once_read_committed(
    exactly_once, kafka_bootstrap, unique, small_artifacts, zeroeval, tmp_path, monkeypatch
):
    # at-least-once: nothing committed before the kill, so the case is sure to occur
    settings, model_topics, events, args = prepare(
        monkeypatch, kafka_bootstrap, unique, small_artifacts, zeroeval, tmp_path,
        IPR_ROUTER_EXACTLY_ONCE=str(exactly_once).lower(), IPR_ROUTER_COMMIT_INTERVAL_S="30",
        IPR_CONTROL=f"router.control.{unique}", IPR_SHADOW=f"router.shadow.{unique}")
    shadow = shadow_copy(small_artifacts, tmp_path)
    routers = [Service("router", args, {}, tmp_path / "a")]

    async def scenario() -> tuple[Collected, Collected]:
        await asyncio.to_thread(wait_for_log, routers[0], f"-> {shadow}", 180)
        await wait_until_routing(settings, settings, unique, model_topics)
        sending = asyncio.create_task(produce(settings, settings.prompts_in, events, RATE))
        await seen(settings, model_topics, unique, settings, lambda c: len(c.routed) >= N // 6,
                   f"{N // 6} prompts routed before the kill")
        await asyncio.to_thread(routers[0].kill)
        routers.append(Service("router", args, {}, tmp_path / "b"))
        await sending
        # Once a sentinel sent after the stream is routed (and committed) on each partition, so
        # is every duplicate the restart made: then read all there is.
        await routed_past(settings, model_topics, unique, "read_committed")
        return (await collected_to_end(settings, model_topics, unique, settings, "read_committed"),
                await collected_to_end(settings, model_topics, unique, settings))

    try:
        committed, uncommitted = asyncio.run(scenario())
        shadowed = asyncio.run(shadow_counts(settings, unique))
        alive = routers[1].alive()
    finally:
        for r in routers:
            r.stop()
    assert alive, routers[1].log_tail()
    assert set(committed.routed) == {k.decode() for k, _ in events}  # 0 lost
    print(f"exactly_once={exactly_once}: {committed.routed_dupes} routed twice read_committed, "
          f"{uncommitted.routed_dupes} read_uncommitted")
    if exactly_once:
        assert committed.routed_dupes == 0
        # the shadow's decisions are in the transactions too: each prompt's at most once (before:
        # sent outside them, the killed router's reached read_committed readers and the new
        # router, once its shadow is loaded, made them again)
        assert len(shadowed) >= N // 6 and max(shadowed.values()) == 1, shadowed.most_common(3)
    else:  # the case is real: the same kill duplicates without transactions
        assert committed.routed_dupes > 0


def test_a_revocation_and_a_graceful_stop_close_the_transactional_producers(
    kafka_bootstrap, unique, small_artifacts, zeroeval, tmp_path, monkeypatch
):
    """A second router joins mid-stream (the first's partitions are split: a revocation), then
    the first stops on SIGTERM: every prompt routed once read_committed, and the first router
    left no transactional producer open (before, one per partition it had served)."""
    settings, model_topics, events, args = prepare(
        monkeypatch, kafka_bootstrap, unique, small_artifacts, zeroeval, tmp_path,
        IPR_ROUTER_EXACTLY_ONCE="true")
    routers = [Service("router", args, {}, tmp_path / "a")]

    async def scenario() -> Collected:
        await wait_until_routing(settings, settings, unique, model_topics)
        sending = asyncio.create_task(produce(settings, settings.prompts_in, events, RATE))
        await seen(settings, model_topics, unique, settings, lambda c: len(c.routed) >= N // 6,
                   f"{N // 6} prompts routed before the second router")
        routers.append(Service("router", args, {}, tmp_path / "b"))
        await seen(settings, model_topics, unique, settings, lambda c: len(c.routed) >= N // 2,
                   f"{N // 2} prompts routed before the first router stops")
        code = await asyncio.to_thread(routers[0].stop, 60.0)
        assert code in (0, -15), routers[0].log_tail()
        await sending
        await routed_past(settings, model_topics, unique, "read_committed")
        return await collected_to_end(settings, model_topics, unique, settings, "read_committed")

    try:
        committed = asyncio.run(scenario())
        alive = routers[1].alive()
    finally:
        for r in routers:
            r.stop()
    assert alive, routers[1].log_tail()
    assert set(committed.routed) == {k.decode() for k, _ in events}  # 0 lost
    assert committed.routed_dupes == 0
    first = routers[0].log_path.read_text(errors="replace")
    assert "Unclosed AIOKafkaProducer" not in first, first[-3000:]
