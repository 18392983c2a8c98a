import asyncio
import os
import shutil

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.kafka import local as broker
from streams.kafka.admin import create_topics

N = 100
TIMEOUT = 30.0


async def produce(bootstrap: str, topic: str, n: int) -> dict[str, int]:
    """Send n keyed records; return the partition each key landed on."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=f"k{i:03d}".encode(), value=f"v{i}".encode())
            for i in range(n)
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {f"k{i:03d}": md.partition for i, md in enumerate(metadata)}


async def consume(bootstrap: str, topic: str, group: str, n: int) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list = []
    try:
        while len(records) < n:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        # Nothing beyond the n records: read once more briefly.
        records.extend(r for b in (await consumer.getmany(timeout_ms=500)).values() for r in b)
    finally:
        await consumer.stop()
    return records


def test_produce_and_consume_keyed_messages(kafka_bootstrap, unique):
    topic, group = f"test.{unique}", f"group.{unique}"

    async def scenario():
        create = create_topics(kafka_bootstrap, [topic], partitions=4)
        await asyncio.wait_for(create, TIMEOUT)
        sent = await asyncio.wait_for(produce(kafka_bootstrap, topic, N), TIMEOUT)
        received = await asyncio.wait_for(consume(kafka_bootstrap, topic, group, N), TIMEOUT)
        return sent, received

    sent, received = asyncio.run(scenario())
    keys = [r.key.decode() for r in received]
    assert len(received) == N
    assert sorted(keys) == [f"k{i:03d}" for i in range(N)]
    assert all(r.value.decode() == f"v{int(r.key[1:])}" for r in received)
    # Keyed partitioning: each record is on the partition the producer reported, over >1 partition.
    assert {r.key.decode(): r.partition for r in received} == sent
    assert len(set(sent.values())) > 1


def test_create_topics_is_idempotent(kafka_bootstrap, unique):
    topic = f"test.{unique}"

    async def scenario():
        from aiokafka.admin import AIOKafkaAdminClient

        await create_topics(kafka_bootstrap, [topic], partitions=3)
        await create_topics(kafka_bootstrap, [topic], partitions=3)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return described

    described = asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert described["error_code"] == 0
    assert len(described["partitions"]) == 3


@pytest.mark.skipif(shutil.which("java") is None, reason="needs java")
@pytest.mark.skipif(bool(os.environ.get(broker.ENV_BOOTSTRAP)), reason="uses an existing cluster")
def test_local_kafka_partitions_and_cleanup(unique):
    with broker.LocalKafka(partitions=2) as kafka:
        workdir, process = kafka.workdir, kafka.process
        assert kafka.bootstrap.startswith("127.0.0.1:")
        topic = f"auto.{unique}"
        sent = asyncio.run(asyncio.wait_for(produce(kafka.bootstrap, topic, 10), TIMEOUT))
        assert set(sent.values()) <= {0, 1}  # auto-created with num.partitions=2
        assert len(set(sent.values())) == 2
    assert process.poll() is not None
    assert not workdir.exists()
