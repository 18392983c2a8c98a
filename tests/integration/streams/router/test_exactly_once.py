"""Exactly-once routing (IPR_ROUTER_EXACTLY_ONCE) on the real broker: a router killed (SIGKILL)
mid-stream and replaced leaves every prompt routed once on the model topics read with
read_committed; at-least-once, the same kill routes again what came since its last commit."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.processes import Service
from benchmarks.traffic import Collected, produce, wait_until_routing
from streams.kafka.settings import KafkaSettings
from tests.integration.kafka_waits import collected_to_end, routed_past, seen
from tests.integration.streams.kafka import system

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


@pytest.mark.parametrize("exactly_once", [True, False])
def test_a_router_killed_mid_stream_routes_each_prompt_once_read_committed(
    exactly_once, kafka_bootstrap, unique, small_artifacts, zeroeval, tmp_path, monkeypatch
):
    # at-least-once: nothing committed before the kill, so the case is sure to occur
    settings, model_topics, events, args = prepare(
        monkeypatch, kafka_bootstrap, unique, small_artifacts, zeroeval, tmp_path,
        IPR_ROUTER_EXACTLY_ONCE=str(exactly_once).lower(), IPR_ROUTER_COMMIT_INTERVAL_S="30")
    routers = [Service("router", args, {}, tmp_path / "a")]

    async def scenario() -> tuple[Collected, Collected]:
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
