"""Exactly-once routing (``IPR_ROUTER_EXACTLY_ONCE``): a batch's outputs and the next offsets of
the ``prompts.in`` records they came from are committed in one Kafka transaction.

Group commit: each input partition has one committer, which commits everything queued for it
since its last transaction in the next one, and starts a partition's transactions at most every
``IPR_ROUTER_TRANSACTION_INTERVAL_MS`` (50 ms; Kafka Streams commits every 100 ms under
exactly-once). A batch after a quiet spell is committed at once; under load, the batches routed
meanwhile share a transaction, so its fixed cost (four round trips, the coordinator's log, a
commit marker in every partition it touched) is paid per interval, not per batch of four prompts.
The router keeps up to ``IPR_ROUTER_MAX_UNCOMMITTED_BATCHES`` batches queued or committing.
Measured (docs/measurements.md): 0.71-0.72 of at-least-once's end-to-end throughput, before
0.59-0.63; the rest is the broker's work per transaction, four producers' worth of them, since
aiokafka cannot fence a single producer per process by the group's generation (KIP-447).

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
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streams.kafka.clients import aiokafka_config
from streams.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)

# topic, key, value, headers (a trace's context: streams.tracing)
Output = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]


class Transactions:
    """Transactional producers by partition of the input topic, started on first use, and each
    partition's committer (:meth:`add`)."""

    def __init__(self, kafka: KafkaSettings, group_id: str, topic: str,
                 owns: Callable[[int], bool] = lambda partition: True,
                 interval_s: float = 0.0) -> None:
        self.kafka, self.group_id, self.topic, self.owns = kafka, group_id, topic, owns
        self.interval_s = interval_s  # a partition's transactions start at most this often
        self.producers: dict[int, AIOKafkaProducer] = {}
        self._committers: dict[int, _Committer] = {}

    def add(self, partition: int, outputs: list[Output], next_offset: int) -> asyncio.Future:
        """Queue a batch's ``outputs`` from ``partition`` for that partition's next transaction,
        with ``next_offset``. The future is done when that transaction is: True once committed,
        False when the partition moved to another router (its new owner routes the records),
        or the transaction's exception."""
        done = asyncio.get_running_loop().create_future()
        c = self._committers.get(partition)
        if c is None:
            c = self._committers[partition] = _Committer()
            c.task = asyncio.ensure_future(self._commit_queued(partition, c))
        c.queue.append((outputs, next_offset, done))
        c.wake.set()
        return done

    async def _commit_queued(self, partition: int, c: _Committer) -> None:
        """The committer of ``partition``: what is queued, in one transaction, until closed."""
        loop = asyncio.get_running_loop()
        while True:
            await c.wake.wait()
            await asyncio.sleep(c.started + self.interval_s - loop.time())  # what comes, joins
            c.wake.clear()
            if c.closing:  # what is queued stays, for close() to hand back
                continue
            taken, c.queue = c.queue, []
            if not taken:
                continue
            c.idle.clear()
            c.started = loop.time()
            try:
                committed = await self.commit(partition, [o for q in taken for o in q[0]],
                                              max(q[1] for q in taken))
            except Exception as e:  # noqa: BLE001 - handed to every batch it held
                for *_, done in taken:
                    done.set_exception(e)
            else:
                for *_, done in taken:
                    done.set_result(committed)
            finally:
                c.idle.set()

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
                    sends = [await p.send(topic, key=key, value=value, headers=headers)
                             for topic, key, value, headers in outputs]
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
        """A batch's outputs, queued by input partition; done when all their transactions are."""
        await asyncio.gather(*(self.add(part, outputs.get(part, []), offset)
                               for part, offset in next_offsets.items()))

    async def close(self, partitions: Iterable[int] | None = None) -> None:
        """Stop the committers and producers of ``partitions`` (default: all): when they are
        revoked and when the router stops. A transaction under way is let finish; batches still
        queued are left to the partition's next owner (their futures say False). A producer
        left open would hold its transactional id until fenced or timed out."""
        chosen = set(self.producers) | set(self._committers) if partitions is None else partitions
        for partition in list(chosen):
            c = self._committers.pop(partition, None)
            if c is not None:
                c.closing = True
                await c.idle.wait()
                c.task.cancel()
                for *_, done in c.queue:
                    if not done.done():
                        done.set_result(False)
            await self.drop(partition)

    async def drop(self, partition: int) -> None:
        p = self.producers.pop(partition, None)
        if p is not None:
            try:
                await p.stop()
            except Exception as e:  # noqa: BLE001 - it is being replaced anyway
                log.info("stopping the transactional producer of partition %d: %s", partition, e)


@dataclass(eq=False)
class _Committer:
    """One partition's queue of (outputs, next offset, future) and its committer's state."""

    queue: list[tuple[list[Output], int, asyncio.Future]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    started: float = float("-inf")  # when its last transaction started (the loop's clock)
    task: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self.idle.set()


def by_partition(outputs: Iterable[tuple[int, Output]]) -> dict[int, list[Output]]:
    grouped: dict[int, list[Output]] = defaultdict(list)
    for partition, out in outputs:
        grouped[partition].append(out)
    return dict(grouped)
