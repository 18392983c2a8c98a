"""Exactly-once routing (``IPR_ROUTER_EXACTLY_ONCE``): a batch's outputs and the next offsets of
the ``prompts.in`` records they came from are committed in one Kafka transaction.

One transactional producer per partition of ``prompts.in`` (transactional id
``<app id>.router.<partition>``: the model Kafka Streams used first). A router that starts
serving a partition starts its producer, which fences the producer of the previous owner and
aborts its open transaction: after a crash, what it had sent but not committed is never seen by a
``read_committed`` consumer, and its records are routed again, once. The Faust consumer still
reads the records and commits offsets too, but each event is acknowledged only after its
transaction committed, so Faust never commits past what a transaction carried.

Why not Faust's own ``processing_guarantee="exactly_once"``: its transaction manager picks the
producer by the *output* topic's partition and the assignor's group of that topic, which exists
only for topics the app consumes (a KeyError for ``prompts.routed.<model>``), and it commits on
its own timer, between a batch's sends and its acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streams.kafka.clients import aiokafka_config
from streams.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)

Output = tuple[str, bytes | None, bytes]  # topic, key, value


class Transactions:
    """Transactional producers by partition of the input topic, started on first use."""

    def __init__(self, kafka: KafkaSettings, group_id: str, topic: str,
                 owns: Callable[[int], bool] = lambda partition: True) -> None:
        self.kafka, self.group_id, self.topic, self.owns = kafka, group_id, topic, owns
        self.producers: dict[int, AIOKafkaProducer] = {}

    def transactional_id(self, partition: int) -> str:
        return f"{self.group_id}.router.{partition}"

    async def producer(self, partition: int) -> AIOKafkaProducer:
        if partition not in self.producers:
            p = AIOKafkaProducer(**aiokafka_config(self.kafka), acks="all", linger_ms=1,
                                 enable_idempotence=True,
                                 transactional_id=self.transactional_id(partition))
            await p.start()  # InitProducerId: fences the previous owner, aborts its transaction
            self.producers[partition] = p
        return self.producers[partition]

    async def commit(self, partition: int, outputs: list[Output], next_offset: int) -> bool:
        """Send ``outputs`` and commit ``next_offset`` of ``partition`` as one transaction. A
        transaction that fails is aborted (nothing of it is visible) and tried once more with a
        new producer, unless the partition has moved to another router meanwhile (then False:
        its new owner routes these records). A second failure is raised."""
        for attempt in (1, 2):
            p = await self.producer(partition)
            try:
                async with p.transaction():
                    sends = [await p.send(topic, key=key, value=value)
                             for topic, key, value in outputs]
                    await asyncio.gather(*sends)
                    await p.send_offsets_to_transaction(
                        {TopicPartition(self.topic, partition): next_offset}, self.group_id)
                return True
            except Exception as e:
                await self.drop(partition)  # fenced or broken: a new producer, or none
                if not self.owns(partition):
                    log.warning("partition %d of %s moved to another router during its "
                                "transaction (%s): left to it", partition, self.topic,
                                type(e).__name__)
                    return False
                if attempt == 2:
                    raise
                log.warning("the transaction of partition %d failed (%s: %s); once more with a "
                            "new producer", partition, type(e).__name__, e)
        return False

    async def commit_batch(self, outputs: dict[int, list[Output]],
                           next_offsets: dict[int, int]) -> None:
        """One transaction per input partition of the batch, run side by side."""
        await asyncio.gather(*(self.commit(part, outputs.get(part, []), offset)
                               for part, offset in next_offsets.items()))

    async def close(self, partitions: Iterable[int] | None = None) -> None:
        """Stop the producers of ``partitions`` (default: all): when they are revoked (Faust has
        waited for the batches in flight, so no transaction is open) and when the router stops.
        A producer left open would hold its transactional id until fenced or timed out."""
        for partition in list(self.producers if partitions is None else partitions):
            await self.drop(partition)

    async def drop(self, partition: int) -> None:
        p = self.producers.pop(partition, None)
        if p is not None:
            try:
                await p.stop()
            except Exception as e:  # noqa: BLE001 - it is being replaced anyway
                log.info("stopping the transactional producer of partition %d: %s", partition, e)


def by_partition(outputs: Iterable[tuple[int, Output]]) -> dict[int, list[Output]]:
    grouped: dict[int, list[Output]] = defaultdict(list)
    for partition, out in outputs:
        grouped[partition].append(out)
    return dict(grouped)
