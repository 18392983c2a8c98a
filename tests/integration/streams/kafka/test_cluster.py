"""A 3-node cluster (replication factor 3, min.insync.replicas 2) under a running router, replay
worker and feedback service: the node leading ``prompts.in``'s partitions is killed (SIGKILL)
mid-stream and started again. None of the services is restarted, every prompt is answered, every
label is kept, every topic (the project's, Faust's changelogs, the consumer offsets) has 3
replicas, and the stall and the duplicates are measured."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from aiokafka.errors import KafkaError

from benchmarks.traffic import collect, count_records, produce, wait_until_routing
from streams.kafka.admin import describe_partitions, topic_config
from streams.kafka.cluster import LocalCluster
from streams.kafka.settings import KafkaSettings
from tests.integration.kafka_waits import seen
from tests.integration.streams.kafka import system
from tests.waits import eventually

N = 300
RATE = 20.0


@pytest.fixture
def cluster(tmp_path) -> Iterator[LocalCluster]:
    """Three nodes of this test's own, on fixed ports and folders: a node restarts in place."""
    with LocalCluster(3, data_dir=tmp_path / "kafka", heap="384m") as nodes:
        yield nodes


async def leading_node(cluster: LocalCluster, settings: KafkaSettings) -> tuple[int, list[int]]:
    """(index of the node that leads most of prompts.in's partitions, the partitions it leads)."""
    parts = (await describe_partitions(settings, [settings.prompts_in]))[settings.prompts_in]
    leader, _ = Counter(p.leader for p in parts.values()).most_common(1)[0]
    return cluster.node_index(leader), sorted(n for n, p in parts.items() if p.leader == leader)


async def wait_fully_replicated(settings: KafkaSettings) -> dict:
    """Every topic's partitions, once each has its 3 replicas in sync (the node caught up)."""
    last: dict = {}

    async def in_sync() -> bool:
        last["topics"] = await describe_partitions(settings)
        return not lagging(last["topics"], lambda p: len(p.isr) < 3)

    await eventually(in_sync, interval=0.5, why=lambda: f"not 3 in-sync replicas: "
                     f"{lagging(last['topics'], lambda p: len(p.isr) < 3)}")
    return last["topics"]


async def wait_led_elsewhere(settings: KafkaSettings, node_id: int) -> None:
    """Until no partition of prompts.in is led by ``node_id`` (or has no leader): the cluster
    has noticed that the node is gone, and its partitions have moved."""
    last: dict = {"topics": {}}

    def stuck(p) -> bool:
        return p.leader in (node_id, -1)

    async def moved() -> bool:
        try:
            last["topics"] = await describe_partitions(settings, [settings.prompts_in])
        except KafkaError:  # asked of the node just killed: ask again
            return False
        return not lagging(last["topics"], stuck)

    await eventually(moved, interval=0.5,
                     why=lambda: f"still led by node {node_id}: {lagging(last['topics'], stuck)}")


def lagging(topics: dict, bad) -> list[str]:
    return [f"{t}/{n}" for t, parts in topics.items() for n, p in parts.items() if bad(p)]


def test_killing_the_leader_of_prompts_in_mid_stream_loses_nothing(
    cluster, unique, small_artifacts, data_dir, zeroeval, tmp_path, monkeypatch
):
    env = {"IPR_KAFKA_BOOTSTRAP": cluster.bootstrap, "IPR_TOPIC_REPLICATION": "3",
           "IPR_ROUTER_APP_ID": f"router-{unique}", "IPR_ROUTER_WEB_ENABLED": "false",
           "IPR_ROUTER_DATA_DIR": str(tmp_path / "faust"),
           "IPR_WORKER_GROUP_PREFIX": f"worker-{unique}", "IPR_FEEDBACK_APP_ID": f"fb-{unique}",
           "IPR_FEEDBACK_DATA_DIR": str(tmp_path / "faust-fb"),
           "IPR_FEEDBACK_VERSIONS_DIR": str(tmp_path / "versions")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = KafkaSettings()
    models, model_topics = system.prepare(settings, small_artifacts)
    events = system.prompt_events(zeroeval, unique, N)
    services = system.start(small_artifacts, data_dir / "zeroeval", models, tmp_path)
    outputs = [settings.responses, settings.prompts_dlq, *model_topics]
    fault: dict[str, object] = {}

    async def kill_the_leader_mid_stream() -> None:
        await seen(settings, model_topics, unique, settings, lambda c: len(c.routed) >= N // 5,
                   "prompts routed before the fault")
        index, partitions = await leading_node(cluster, settings)
        fault.update(node=cluster.nodes[index].node_id, partitions=partitions)
        began = time.monotonic()
        cluster.kill(index)
        await wait_led_elsewhere(settings, cluster.nodes[index].node_id)  # it is fenced
        await asyncio.to_thread(cluster.start_node, index)
        fault["down_s"] = time.monotonic() - began

    async def scenario():
        await wait_until_routing(settings, settings, unique, model_topics)
        sending = asyncio.create_task(produce(settings, settings.prompts_in, events, RATE))
        await kill_the_leader_mid_stream()
        await sending
        got = await collect(settings, outputs, unique,
                            lambda c: len(c.responses) >= N and len(c.routed) >= N, 300, settings)
        labels = await count_records(settings, f"fb-{unique}-labels-changelog", N, 60)
        topics = await wait_fully_replicated(settings)
        min_isr = await topic_config(settings, settings.prompts_in, ["min.insync.replicas"])
        return got, labels, topics, min_isr

    began = time.monotonic()
    try:
        system.wait_until_up(services, models)  # the fault comes mid-stream, not mid-start-up
        up_s = time.monotonic() - began
        got, labels, topics, min_isr = asyncio.run(scenario())
        alive = [s.alive() for s in services]
    finally:
        for s in services:
            s.stop()
    assert alive == [True] * 3, "".join(s.log_tail() for s in services)
    assert labels >= N  # the feedback service joined every label (a repeat is not a loss)
    assert set(got.responses) == {k.decode() for k, _ in events}  # 0 lost
    assert not got.dead
    # every topic has 3 replicas: the project's, Faust's changelogs, the consumer offsets
    expected = {"__consumer_offsets", f"fb-{unique}-labels-changelog", settings.prompts_in}
    assert expected <= set(topics)
    assert {t: {len(p.replicas) for p in parts.values()} for t, parts in topics.items()} \
        == {t: {3} for t in topics}
    assert min_isr == {"min.insync.replicas": "2"}
    routed_at = sorted(r.routed_at for r in got.routed.values())
    stall = max(b - a for a, b in zip(routed_at, routed_at[1:], strict=False))
    print(f"cluster up in {cluster.startup_seconds:.1f} s, services in {up_s:.1f} s; "
          f"node {fault['node']} (leader of prompts.in partitions {fault['partitions']}) killed, "
          f"back in {fault['down_s']:.1f} s; routing stalled {stall:.1f} s; "
          f"{got.routed_dupes} routed and {got.response_dupes} answered twice; "
          f"{len(topics)} topics, all with 3 replicas")
