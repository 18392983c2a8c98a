"""Counting the tenants' spend: the real ``cost_usd`` of every response on ``responses.out``, into
``router.spend``, the changelog of a table keyed by (tenant, period, period start, partition),
and the reservations the responses settle (``settled_usd``: :mod:`streams.router.budget`).

Every router process runs a counter; the counters share the consumer group ``<app id>.spend``,
so each partition of ``responses.out`` is counted by one process at a time and scale-out does not
multiply a response's cost. A counter writes, per batch, the running sum of each key it moved
(each response counts in its tenant's hour, day and month, by its record's timestamp, UTC),
waits until those records are on Kafka, applies them to its own process's view at once, and only
then commits the batch's offsets. Each record holds the offset of the last response it counted:
a response read again after a crash or a rebalance (offsets not yet committed) is at or below it
and is not counted twice. A counter takes a partition only once its view has read
``router.spend`` to its end (:meth:`TopicFollower.synced`), so it adds to the latest sums, and a
partition is given up only between batches. Every router reads the whole topic
(:class:`streams.router.tenants.Tenants`): the sum over partitions is the tenant's spend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from schemas import ModelResponse, SchemaError, TenantSpend, decode, encode
from schemas.topics import spend_key
from streams.kafka.admin import KafkaAdminError, create_topics
from streams.kafka.clients import aiokafka_config
from streams.router.policy import PERIODS, oldest_kept, period_start
from streams.router.settings import RouterSettings
from streams.router.tenants import Tenants

log = logging.getLogger(__name__)

Lookup = Callable[[str, str, float, int], TenantSpend | None]


def count_responses(messages: Iterable[Any], partition: int, known: Lookup,
                    now: float) -> list[TenantSpend]:
    """The spend records that ``messages`` (one partition of responses.out, in offset order)
    move: for each response with a tenant, its hour, day and month, each the running sum from
    the record ``known`` has for that key; the reservation it settles counts in the periods of
    its reservation (where it was reserved). A response at or below a record's offset was
    counted already; periods before the previous one are not counted; a malformed response is
    skipped (only workers write the topic) and logged."""
    moved: dict[tuple[str, str, float], TenantSpend] = {}
    for msg in messages:
        try:
            response = decode(ModelResponse, msg.value)
        except SchemaError as e:
            log.error("spend: ignored a malformed response at partition %d offset %d: %s",
                      partition, msg.offset, e)
            continue
        if response.tenant is None:
            continue
        at = msg.timestamp / 1000.0 if msg.timestamp is not None and msg.timestamp >= 0 else now
        for key, (cost, settled, n) in _moves(response, at, now).items():
            base = moved.get(key) or known(*key, partition)
            if base is not None and msg.offset <= base.offset:
                continue
            moved[key] = TenantSpend(
                tenant=key[0], period=key[1], period_start=key[2], partition=partition,
                spend_usd=(0.0 if base is None else base.spend_usd) + cost,
                responses=(0 if base is None else base.responses) + n,
                offset=msg.offset, updated_at=now,
                settled_usd=(0.0 if base is None else base.settled_usd) + settled,
            )
    return list(moved.values())


def _moves(response: ModelResponse, at: float,
           now: float) -> dict[tuple[str, str, float], tuple[float, float, int]]:
    """What one response adds to each (tenant, period, start) it moves: cost, settled, count."""
    tenant = response.tenant
    assert tenant is not None
    out: dict[tuple[str, str, float], tuple[float, float, int]] = {}
    for period in PERIODS:
        start = period_start(period, at)
        if start >= oldest_kept(period, now):
            out[(tenant, period, start)] = (response.cost_usd, 0.0, 1)
        r = response.reservation
        if r is not None and period_start(period, r.at) >= oldest_kept(period, now):
            key = (tenant, period, period_start(period, r.at))
            cost, _, n = out.get(key, (0.0, 0.0, 0))
            out[key] = (cost, r.usd, n)
    return out


class SpendCounter:
    """Counts the responses of the partitions of responses.out this process is assigned."""

    def __init__(self, settings: RouterSettings, tenants: Tenants) -> None:
        self.settings = settings
        self.tenants = tenants
        self.group = f"{settings.app_id}.spend"
        self._lock = asyncio.Lock()  # one batch at a time; a revocation waits for it

    async def run(self) -> None:
        s = self.settings
        await self.tenants.ready.wait()
        try:
            await create_topics(s, [s.responses], partitions=s.topic_partitions)
        except KafkaAdminError as e:
            log.warning("could not create topic %s: %s", s.responses, e)
        consumer = AIOKafkaConsumer(
            **aiokafka_config(s), group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            session_timeout_ms=int(1000 * s.kafka_session_timeout_s),
            heartbeat_interval_ms=int(1000 * s.kafka_session_timeout_s / 3),
        )
        consumer.subscribe([s.responses], listener=_Rebalance(self))
        producer = AIOKafkaProducer(**aiokafka_config(s), acks="all", enable_idempotence=True)
        await producer.start()
        await consumer.start()
        log.warning("spend: counting %s as group %s into %s", s.responses, self.group, s.spend)
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                if batches:
                    async with self._lock:
                        await self._count(consumer, producer, batches)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _count(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
                     batches: dict) -> None:
        now = time.time()
        owned = consumer.assignment()
        records: list[TenantSpend] = []
        offsets = {}
        for tp, msgs in batches.items():
            if tp not in owned or not msgs:  # revoked before this batch was taken up
                continue
            records += count_responses(msgs, tp.partition, self.tenants.spend.get, now)
            offsets[tp] = msgs[-1].offset + 1
        sent = [await producer.send(
            self.settings.spend, encode(r),
            key=spend_key(r.tenant, r.period, r.period_start, r.partition)) for r in records]
        await asyncio.gather(*sent)  # on Kafka before the offsets move
        for r in records:
            self.tenants.record_spend(r)
        try:
            await consumer.commit(offsets)
        except KafkaError as e:  # read again later: the records' offsets keep it counted once
            log.warning("spend: commit failed (%s)", type(e).__name__)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, counter: SpendCounter) -> None:
        self.counter = counter

    async def on_partitions_revoked(self, revoked) -> None:
        async with self.counter._lock:  # the batch in flight is written and committed first
            pass

    async def on_partitions_assigned(self, assigned) -> None:
        if assigned:  # add to the latest sums: what another process wrote is read first
            await self.counter.tenants.spend_follower.synced()
