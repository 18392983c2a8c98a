"""Which prompt ids the workers already answered, kept beyond one process.

Every response a worker publishes is also recorded, keyed by prompt_id, on the answered topic
(``<group_prefix>.answered``, compacted, a week's retention), acknowledged before the record's
offset is committed. A worker that starts reads the topic's recent history before it takes a
record, then follows it: a prompt answered by a process that has since been killed, restarted,
or lost its partitions in a rebalance is not called again. What a process remembers is bounded
(:class:`Answered`, the last ``dedupe_size`` ids in memory fixed from the start; 0 turns
deduplication off).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from array import array

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.clients import aiokafka_config
from streams.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

WEEK_MS = 7 * 24 * 3600 * 1000
TOPIC_CONFIG = {"cleanup.policy": "compact,delete", "retention.ms": str(WEEK_MS)}


class Answered:
    """The last ``size`` prompt ids answered or dispatched, in memory fixed from the start.

    Each id is kept as its 64-bit fingerprint (blake2b) in an open-addressing table of at least
    2.5 x ``size`` slots (linear probing, backward-shift deletion), and in a ring in the order they
    came; once the ring is full, the oldest is forgotten. Nothing grows as ids come: a dict of the
    ids themselves grew by its strings and doubled its table at 21,846 ids, 43,691 and 87,382 (a
    30-minute ``make soak`` worker +3.2%; docs/measurements.md, "Soak"). Two ids sharing a
    fingerprint (about 1 in 10^9 among 100,000) would be taken for one: the second not answered.
    """

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        slots = 1 << max(4, math.ceil(math.log2(max(1, self.size) * 2.5)))
        self._mask = slots - 1
        self._table = array("q", bytes(8 * slots)) if self.size else array("q")  # 0: empty slot
        self._ring = array("q", bytes(8 * self.size))
        self._next = 0  # where the ring's next id goes: its oldest, once full
        self._count = 0

    def check_and_add(self, prompt_id: str) -> bool:
        """True if the id was seen already; else remember it and return False."""
        if not self.size:
            return False
        fp = _fingerprint(prompt_id)
        seen, slot = self._find(fp)
        if not seen:
            self._insert(fp, slot)
        return seen

    def add(self, prompt_id: str) -> None:
        self.check_and_add(prompt_id)

    def __len__(self) -> int:
        return self._count

    def _find(self, fp: int) -> tuple[bool, int]:
        """(whether ``fp`` is in the table, its slot or the empty one it would take)."""
        table, mask = self._table, self._mask
        slot = fp & mask
        while True:
            held = table[slot]
            if held == 0 or held == fp:
                return held == fp, slot
            slot = (slot + 1) & mask

    def _insert(self, fp: int, slot: int) -> None:
        if self._count == self.size:
            self._remove(self._ring[self._next])
            _, slot = self._find(fp)  # the removal may have shifted the run it was to end
        else:
            self._count += 1
        self._table[slot] = fp
        self._ring[self._next] = fp
        self._next = (self._next + 1) % self.size

    def _remove(self, fp: int) -> None:
        """Empty ``fp``'s slot, moving back the ids after it in its run that may not skip it."""
        table, mask = self._table, self._mask
        found, hole = self._find(fp)
        if not found:
            return
        slot = hole
        while True:
            slot = (slot + 1) & mask
            held = table[slot]
            if held == 0:
                break
            home = held & mask
            # it stays where it is if its home lies cyclically in (hole, slot]
            if (home - hole - 1) & mask >= (slot - hole) & mask:
                table[hole] = held
                hole = slot
        table[hole] = 0


def _fingerprint(prompt_id: str) -> int:
    digest = hashlib.blake2b(prompt_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1  # never 0, the empty slot


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
        """Read the history (bounded by its size) and start following; returns how many
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
