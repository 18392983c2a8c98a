"""Which prompt ids the workers already answered, kept beyond one process.

Every response a worker publishes is also recorded, keyed by prompt_id, on the answered topic
(``<group_prefix>.answered``, compacted, a week's retention), acknowledged before the record's
offset is committed. A worker that starts reads the topic's recent history before it takes a
record, then follows it: a prompt answered by a process that has since been killed, restarted,
or lost its partitions in a rebalance is not called again. What a process remembers is bounded
(:class:`Answered`, an LRU of ``dedupe_size`` ids; 0 turns deduplication off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.clients import aiokafka_config
from streams.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

WEEK_MS = 7 * 24 * 3600 * 1000
TOPIC_CONFIG = {"cleanup.policy": "compact,delete", "retention.ms": str(WEEK_MS)}


class Answered:
    """The last `size` prompt_ids answered or dispatched (LRU)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, prompt_id: str) -> bool:
        """True if the id was seen already (and refresh it); else remember it and return False."""
        if prompt_id in self._ids:
            self._ids.move_to_end(prompt_id)
            return True
        self.add(prompt_id)
        return False

    def add(self, prompt_id: str) -> None:
        if self.size > 0:
            self._ids[prompt_id] = None
            self._ids.move_to_end(prompt_id)
            if len(self._ids) > self.size:
                self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


def answered_topic(settings: WorkerSettings) -> str:
    return settings.answered_topic or f"{settings.group_prefix}.answered"


def start_offsets(
    begin: dict[TopicPartition, int], end: dict[TopicPartition, int], window: int
) -> dict[TopicPartition, int]:
    """Where to start reading each partition so that about ``window`` ids are read in all."""
    per_partition = math.ceil(window / max(1, len(end)))
    return {tp: max(begin[tp], end[tp] - per_partition) for tp in end}


class AnsweredLog:
    """Fills an :class:`Answered` from the answered topic: its recent history at start, then
    what every other worker process records."""

    def __init__(self, settings: WorkerSettings, answered: Answered) -> None:
        self.settings = settings
        self.answered = answered
        self.topic = answered_topic(settings)
        self.consumer: AIOKafkaConsumer | None = None
        self._follow: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether answers are recorded: the topic exists and deduplication is on."""
        return self.consumer is not None

    async def start(self) -> int:
        """Read the history (bounded by the LRU's size) and start following; returns how many
        ids were read."""
        if self.answered.size <= 0:
            return 0
        self.consumer = AIOKafkaConsumer(
            self.topic, **aiokafka_config(self.settings), group_id=None,
            enable_auto_commit=False, client_id="ipr-worker-answered",
        )
        await self.consumer.start()
        try:
            if self.topic not in await self.consumer.topics():
                log.warning("worker: topic %s does not exist; a prompt answered before a restart "
                            "may be answered again", self.topic)
                await self.consumer.stop()
                self.consumer = None
                return 0
            n = await self._read_history()
        except BaseException:
            await self.consumer.stop()
            self.consumer = None
            raise
        self._follow = asyncio.create_task(self._follow_new(), name="worker:answered")
        log.info("worker: %d answered prompt id(s) read from %s", n, self.topic)
        return n

    async def _read_history(self) -> int:
        assert self.consumer is not None
        while not self.consumer.assignment():  # no group: every partition, once metadata came
            await asyncio.sleep(0.05)
        tps = sorted(self.consumer.assignment())
        end = await self.consumer.end_offsets(tps)
        begin = await self.consumer.beginning_offsets(tps)
        for tp, offset in start_offsets(begin, end, self.answered.size).items():
            self.consumer.seek(tp, offset)
        n = 0
        while [tp for tp in tps if await self.consumer.position(tp) < end[tp]]:
            n += self._absorb(await self.consumer.getmany(timeout_ms=500))
        return n

    def _absorb(self, batches) -> int:
        n = 0
        for records in batches.values():
            for record in records:
                if record.key:
                    self.answered.add(record.key.decode("utf-8", "replace"))
                    n += 1
        return n

    async def _follow_new(self) -> None:
        assert self.consumer is not None
        while True:
            try:
                self._absorb(await self.consumer.getmany(timeout_ms=1000))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broker outage: the client reconnects
                log.warning("worker: reading %s failed (%s); retrying", self.topic,
                            type(exc).__name__)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
            self._follow = None
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            self.consumer = None
