"""Consumer lag for ``/metrics``: how far each consumer group a service runs is behind on each of
its topics, ``ipr_kafka_consumer_lag_records{group, topic}``.

Measured every ``IPR_KAFKA_LAG_INTERVAL_S`` as the topic's end offsets (last stable offsets: what
a ``read_committed`` consumer can reach) less the group's committed offsets, summed over the
topic's partitions; a partition the group has not committed yet counts from its start (the
services start there). That is what ``kafka-consumer-groups.sh --describe`` shows, and what a
restarted member would read again. Two requests per group and interval, on one admin client and
one group-less consumer kept open. Each process measures the groups it is a member of, so two
routers of one group report the same figure (a dashboard takes the maximum).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge

from streams.kafka.clients import aiokafka_config
from streams.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)

LAG = Gauge("ipr_kafka_consumer_lag_records",
            "records of a topic its consumer group has not committed yet (end offsets less "
            "committed offsets, over the topic's partitions), by group and topic",
            ["group", "topic"])

Groups = Callable[[], Mapping[str, Sequence[str]]]  # group -> the topics it consumes


async def measure(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group: str,
                  topics: Sequence[str]) -> dict[str, int]:
    """``group``'s lag on each of ``topics`` that exists."""
    tps = [TopicPartition(t["topic"], p["partition"])
           for t in await admin.describe_topics(list(topics)) if not t["error_code"]
           for p in t["partitions"]]
    if not tps:
        return {}
    committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    end = await consumer.end_offsets(tps)
    start = await consumer.beginning_offsets(tps)
    lag = dict.fromkeys((tp.topic for tp in tps), 0)
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else start[tp]
        lag[tp.topic] += max(0, end[tp] - max(done, start[tp]))
    return lag


async def watch_lag(kafka: KafkaSettings, groups: Groups) -> None:
    """Measure ``groups()`` into :data:`LAG` every ``kafka.kafka_lag_interval_s`` until
    cancelled (0: never). A failure is logged once, until a measure succeeds again: the lag is
    for operators, it never stops a service."""
    every = kafka.kafka_lag_interval_s
    if every <= 0:
        return
    clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None
    failing = False
    try:
        while True:
            try:
                clients = clients or await _start(kafka)
                for group, topics in groups().items():
                    for topic, n in (await asyncio.wait_for(
                            measure(*clients, group, topics), max(every, 10.0))).items():
                        LAG.labels(group, topic).set(n)
                if failing:
                    log.info("consumer lag measured again")
                failing = False
            except Exception as e:  # noqa: BLE001 - the lag is for operators; the service goes on
                if not failing:
                    log.warning("could not measure consumer lag (%s: %s); trying every %.0f s",
                                type(e).__name__, e, every)
                failing = True
                await _stop(clients)
                clients = None
            await asyncio.sleep(every)
    finally:
        await _stop(clients)


async def _start(kafka: KafkaSettings) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
    admin = AIOKafkaAdminClient(**aiokafka_config(kafka))
    consumer = AIOKafkaConsumer(**aiokafka_config(kafka), group_id=None,
                                isolation_level="read_committed", enable_auto_commit=False)
    try:
        await admin.start()
        await consumer.start()
    except BaseException:
        await _stop((admin, consumer))
        raise
    return admin, consumer


async def _stop(clients: tuple[Any, Any] | None) -> None:
    if clients is None:
        return
    admin, consumer = clients
    for close in (consumer.stop, admin.close):
        with contextlib.suppress(Exception):  # closing what failed: nothing more to do
            await close()
