"""States of a real Kafka that the integration tests wait for (with :mod:`tests.waits`): records
seen on a topic, a consumer group's members and commits, and sentinels that mark a point every
partition of a topic has been processed past."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from benchmarks.traffic import Collected, collect, take
from schemas import PromptRequest, encode
from streams.kafka.admin import describe_partitions, group_state
from streams.kafka.clients import Kafka, aiokafka_config
from streams.kafka.settings import KafkaSettings
from tests.waits import WAIT_S, eventually


async def seen(kafka: Kafka, topics: list[str], run: str, settings: KafkaSettings,
               done: Callable[[Collected], bool], what: str, timeout: float = WAIT_S,
               isolation_level: str = "read_uncommitted") -> Collected:
    """What :func:`benchmarks.traffic.collect` reads of ``run`` on ``topics`` once
    ``done(collected)``; fails (naming ``what``) if that is not so within ``timeout``."""
    got = await collect(kafka, topics, run, done, timeout, settings, isolation_level)
    assert done(got), f"not within {timeout:.0f} s: {what}"
    return got


async def read_to_end(kafka: Kafka, topics: list[str], isolation_level: str = "read_uncommitted",
                      timeout: float = WAIT_S) -> list:
    """Every record of ``topics`` up to their end offsets when called (the last stable offsets,
    read_committed: every committed transaction is in)."""

    async def read() -> list:
        tps = await _partitions(kafka, topics)
        if not tps:
            return []
        consumer = AIOKafkaConsumer(**aiokafka_config(kafka), enable_auto_commit=False,
                                    isolation_level=isolation_level)
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out: list = []
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(records)
            return out
        finally:
            await consumer.stop()

    return await asyncio.wait_for(read(), timeout)


async def collected_to_end(kafka: Kafka, topics: list[str], run: str, settings: KafkaSettings,
                           isolation_level: str = "read_uncommitted") -> Collected:
    """What :func:`benchmarks.traffic.collect` would count of ``run`` on ``topics``, read up to
    their end offsets when called."""
    out, now = Collected(), time.time()
    for record in await read_to_end(kafka, topics, isolation_level):
        take(out, record, run, settings, now)
    return out


async def _partitions(kafka: Kafka, topics: list[str]) -> list[TopicPartition]:
    """The partitions of those of ``topics`` that exist."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import UnknownTopicOrPartitionError

    admin = AIOKafkaAdminClient(**aiokafka_config(kafka))
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    out = []
    for t in described:
        if t["error_code"] == UnknownTopicOrPartitionError.errno:
            continue  # not made yet (a topic is made when first written): nothing to read
        assert not t["error_code"], f"describing {t['topic']}: error {t['error_code']}"
        out += [TopicPartition(t["topic"], p["partition"]) for p in t["partitions"]]
    return sorted(out)


async def send_sentinels(kafka: Kafka, topic: str,
                         event: Callable[[int], tuple[bytes, bytes]]) -> list[bytes]:
    """``event(partition)`` (key, value) sent to each partition of ``topic``; returns their keys.
    A service reads each partition in order, so once it has handled every sentinel it has
    handled everything sent to ``topic`` before them."""
    partitions = sorted((await describe_partitions(kafka, [topic]))[topic])
    producer = AIOKafkaProducer(**aiokafka_config(kafka), acks="all")
    await producer.start()
    keys = []
    try:
        for p in partitions:
            key, value = event(p)
            await producer.send_and_wait(topic, value, key=key, partition=p)
            keys.append(key)
    finally:
        await producer.stop()
    return keys


async def routed_past(settings: KafkaSettings, model_topics: list[str], run: str,
                      isolation_level: str = "read_uncommitted") -> None:
    """Send a sentinel prompt to each partition of ``prompts.in`` and wait until each is routed
    (seen at ``isolation_level``): the routers have routed every prompt sent before them, those
    a restarted router routes again included."""
    sentinel = f"{run}-sentinel"

    def prompt(partition: int) -> tuple[bytes, bytes]:
        pid = f"{sentinel}:{partition}"
        return pid.encode(), encode(PromptRequest(prompt_id=pid, text="a sentinel"))

    keys = await send_sentinels(settings, settings.prompts_in, prompt)
    await seen(settings, model_topics, sentinel, settings, lambda c: len(c.routed) >= len(keys),
               f"the {len(keys)} sentinels routed", isolation_level=isolation_level)


async def committed_to_end(kafka: Kafka, group: str, topic: str, timeout: float = WAIT_S) -> None:
    """Until ``group`` has committed every record of ``topic`` (as it is when called)."""
    from aiokafka.admin import AIOKafkaAdminClient

    tps = [TopicPartition(topic, p) for p in (await describe_partitions(kafka, [topic]))[topic]]
    consumer = AIOKafkaConsumer(**aiokafka_config(kafka))
    await consumer.start()
    try:
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    lag: dict[str, object] = {}

    async def caught_up() -> bool:
        admin = AIOKafkaAdminClient(**aiokafka_config(kafka))
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
        except KafkaError as e:  # e.g. the group's coordinator is not known yet
            lag["error"] = repr(e)
            return False
        finally:
            await admin.close()
        lag["n"] = sum(end[tp] - max(committed[tp].offset if tp in committed else 0, 0)
                       for tp in tps)
        return lag["n"] <= 0

    await eventually(caught_up, timeout, interval=0.5,
                     why=lambda: f"{topic} not committed to its end by {group}: {lag}")


async def group_members(kafka: Kafka, group: str, n: int, timeout: float = WAIT_S) -> None:
    """Until ``group`` is stable with ``n`` members: a rebalance has given each its partitions."""
    last: list[object] = []

    async def stable() -> bool:
        try:
            last[:] = [await group_state(kafka, group)]
        except KafkaError as e:  # e.g. the group's coordinator is not known yet
            last[:] = [repr(e)]
        return last[0] == ("Stable", n)

    await eventually(stable, timeout, interval=0.5,
                     why=lambda: f"group {group} is {last}, not stable with {n} members")
