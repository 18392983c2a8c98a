"""Consumer lag as ``streams.kafka.lag`` measures it on a real broker: end offsets less the
group's committed offsets, a partition without a commit counted from its start, per topic."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from streams.kafka.admin import create_topics
from streams.kafka.lag import measure, watch_lag
from streams.kafka.settings import KafkaSettings
from tests.waits import eventually


async def scenario(bootstrap: str, topic: str, other: str, group: str) -> tuple[dict, bool]:
    await create_topics(bootstrap, [topic, other], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, b"x", partition=i % 2)
        await producer.send_and_wait(other, b"y", partition=0)
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                 enable_auto_commit=False)
    await committer.start()
    try:  # partition 0 of topic: 3 of its 5 records done; partition 1 and `other`: none
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): 3})
    finally:
        await committer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        got = await measure(admin, consumer, group, [topic, other, f"{topic}-none"])
    finally:
        await consumer.stop()
        await admin.close()
    settings = KafkaSettings(kafka_bootstrap=bootstrap, kafka_lag_interval_s=0.2)
    watching = asyncio.ensure_future(watch_lag(settings, lambda: {group: [topic]}))
    try:
        gauge = await eventually(lambda: REGISTRY.get_sample_value(
            "ipr_kafka_consumer_lag_records", {"group": group, "topic": topic}) == 7, timeout=60)
    finally:
        watching.cancel()
    return got, gauge


def test_lag_is_what_a_group_has_not_committed(kafka_bootstrap, unique):
    got, gauge = asyncio.run(scenario(kafka_bootstrap, f"lag.{unique}", f"lag-other.{unique}",
                                      f"lag-{unique}"))
    assert got == {f"lag.{unique}": 2 + 5, f"lag-other.{unique}": 1}  # a missing topic: none
    assert gauge  # watch_lag sets the gauge to the same figure
