"""Reading ``router.control``: its history once, then every new message.

A router that starts applies only the latest message of each key (the latest announced artifact
version, each model's latest health report), not every version in the topic's history: loading
a version takes seconds, and an old one may be gone from disk. A feedback service that starts
resumes from the latest version announced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.clients import start_topic_reader
from streams.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)

_POLL_S = 0.1


def latest_per_key(messages: Iterable[Any]) -> list[Any]:
    """The last message of each key (by partition and offset), in that order."""
    latest: dict[bytes | None, Any] = {}
    for msg in sorted(messages, key=lambda m: (m.partition, m.offset)):
        latest[msg.key] = msg
    return sorted(latest.values(), key=lambda m: (m.partition, m.offset))


async def read_control(settings: KafkaSettings, follow: bool = True) -> AsyncIterator[Any]:
    """Yield the latest of each key in the control topic's history, then (``follow``) every new
    message."""
    consumer = await start_topic_reader(settings, settings.control)
    try:
        partitions = await _assigned(consumer, settings.control)
        for msg in latest_per_key(await _read_to_end(consumer, partitions)):
            yield msg
        if follow:
            async for msg in consumer:
                yield msg
    finally:
        await consumer.stop()


async def control_history(settings: KafkaSettings) -> list[Any]:
    """Every message of the control topic so far, by partition and offset (what the harnesses
    count the announced versions in)."""
    return await topic_history(settings, settings.control)


async def topic_history(settings: KafkaSettings, topic: str) -> list[Any]:
    """Every message of ``topic`` from its start to its end offsets when read, by partition and
    offset (what ``ipr shadow`` reads its topics with)."""
    consumer = await start_topic_reader(settings, topic)
    try:
        messages = await _read_to_end(consumer, await _assigned(consumer, topic))
    finally:
        await consumer.stop()
    return sorted(messages, key=lambda m: (m.partition, m.offset))


async def _assigned(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of the topic (no group: the consumer is assigned all of them)."""
    waited = 0.0
    while not consumer.assignment():
        if waited == 0.0:
            log.info("waiting for the partitions of control topic %s", topic)
        await asyncio.sleep(_POLL_S)
        waited += _POLL_S
    return sorted(consumer.assignment())


async def _read_to_end(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> list:
    end = await consumer.end_offsets(partitions)
    out: list = []
    while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
        batches = await consumer.getmany(timeout_ms=500)
        for records in batches.values():
            out.extend(records)
    return out
