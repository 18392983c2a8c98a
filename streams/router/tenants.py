"""What every router process knows of the tenants: their policies (``router.policies``) and their
spend per period (``router.spend``), each topic read whole from its start and then followed.

- :class:`Policies`: the latest valid policy of each tenant and its revision (the record's
  offset). A malformed record, or one whose key is not its tenant, is logged and skipped: the
  tenant's previous policy stays (the CLI validates what it writes, so only another writer can
  put one there). A tombstone removes the tenant's policy.
- :class:`Spend`: the tenants' spend, one record per (tenant, period, period start, partition of
  ``responses.out``), summed over partitions, and what the routers reserved for the prompts in
  flight, one record per (tenant, period, period start, partition of ``prompts.in``). A record
  replaces the one it has only when it counted further (a higher offset): a record that arrives
  late, from a counter that lost its partition, cannot take spend back. Periods before the
  previous one are dropped. A tenant's committed spend is its spend plus its reservations less
  what its answers settled (:mod:`streams.router.budget`).
- :class:`TopicFollower`: reads a topic from the start, then follows it; ``synced()`` returns once
  what was on the topic when it was called has been applied.

:mod:`streams.router.spend` counts the spend into ``router.spend``, the router's agent the
reservations into ``router.reservations`` (read ``read_committed``: in exactly-once mode they are
written in the batch's transaction); it waits until the three topics have been read to their end
before it routes its first batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import SchemaError, TenantPolicy, TenantReservation, TenantSpend, decode
from streams.kafka.admin import KafkaAdminError, create_topics
from streams.kafka.clients import start_topic_reader
from streams.kafka.settings import KafkaSettings
from streams.router.policy import PERIODS, oldest_kept, period_start

log = logging.getLogger(__name__)

_POLL_S = 0.05
POLICIES_CONFIG = {"cleanup.policy": "compact"}
# A month's records are rewritten while the month lasts; the previous month's are kept too.
SPEND_CONFIG = {"cleanup.policy": "compact,delete", "retention.ms": str(62 * 86_400_000)}


class Policies:
    """Each tenant's latest valid policy and its revision."""

    def __init__(self, log_changes: bool = True) -> None:
        self._by_tenant: dict[str, tuple[TenantPolicy, int]] = {}
        self._log_changes = log_changes

    def tenants(self) -> list[str]:
        return list(self._by_tenant)

    def get(self, tenant: str | None) -> tuple[TenantPolicy, int] | None:
        return None if tenant is None else self._by_tenant.get(tenant)

    def __len__(self) -> int:
        return len(self._by_tenant)

    def apply(self, key: bytes | None, value: bytes | None, offset: int) -> TenantPolicy | None:
        """Apply one record of the policies topic; returns the policy it set, if any."""
        tenant = (key or b"").decode("utf-8", "replace")
        if not tenant:
            log.error("ignored a policy record without a key (the tenant) at offset %d", offset)
            return None
        if value is None:
            if self._by_tenant.pop(tenant, None) is not None and self._log_changes:
                log.warning("policy of tenant %r removed (offset %d)", tenant, offset)
            return None
        try:
            policy = decode(TenantPolicy, value)
        except SchemaError as e:
            log.error("ignored a malformed policy for tenant %r at offset %d (%s): %s; its "
                      "previous policy, if any, stays", tenant, offset, e.kind, e)
            return None
        if policy.tenant != tenant:
            log.error("ignored the policy at offset %d: its key is tenant %r, its tenant %r",
                      offset, tenant, policy.tenant)
            return None
        self._by_tenant[tenant] = (policy, offset)
        if self._log_changes:
            log.warning("policy of tenant %r, revision %d: %s", tenant, offset, describe(policy))
        return policy


def describe(policy: TenantPolicy) -> str:
    """One line for the logs and the CLI."""
    parts = [f"τ ≤ {policy.tolerance}" if policy.tolerance is not None else "τ: the prompt's",
             f"models: {', '.join(policy.allowed_models)}" if policy.allowed_models
             else "models: all"]
    if policy.budget_usd is not None:
        parts.append(f"budget {policy.budget_usd} USD per {policy.period}, then "
                     f"{policy.on_exhausted}")
    return "; ".join(parts)


SpendKey = tuple[str, str, float]  # tenant, period, period start


class Spend:
    """The tenants' spend per period, per partition of responses.out, and their reservations,
    per partition of prompts.in."""

    def __init__(self) -> None:
        self._counts: dict[SpendKey, dict[int, TenantSpend]] = {}
        self._reserved: dict[SpendKey, dict[int, TenantReservation]] = {}

    def get(self, tenant: str, period: str, start: float, partition: int) -> TenantSpend | None:
        return self._counts.get((tenant, period, start), {}).get(partition)

    def reservation(self, tenant: str, period: str, start: float,
                    partition: int) -> TenantReservation | None:
        return self._reserved.get((tenant, period, start), {}).get(partition)

    def committed(self, tenant: str, period: str, start: float) -> float:
        """The tenant's spend in the period starting at ``start`` plus what is in flight: its
        reservations less what answers settled (not below 0: an answer may be counted before its
        reservation is read)."""
        spent = list(self._counts.get((tenant, period, start), {}).values())
        reserved = list(self._reserved.get((tenant, period, start), {}).values())
        in_flight = sum(r.reserved_usd for r in reserved) - sum(r.settled_usd for r in spent)
        return sum(r.spend_usd for r in spent) + max(0.0, in_flight)

    def total(self, tenant: str, period: str, start: float) -> float:
        """The tenant's spend in the period starting at ``start``, over every partition (safe
        from the router's scoring thread: the values are copied in one step)."""
        return sum(r.spend_usd for r in list(self._counts.get((tenant, period, start), {})
                                             .values()))

    def current(self, tenant: str, period: str, now: float | None = None) -> float:
        """The tenant's committed spend in the current period."""
        now = time.time() if now is None else now
        return self.committed(tenant, period, period_start(period, now))

    def apply(self, record: TenantSpend | TenantReservation, now: float | None = None) -> bool:
        """Keep ``record`` unless what is kept for its key counted as far or further, or its
        period is older than the previous one; True when kept."""
        now = time.time() if now is None else now
        if record.period_start < oldest_kept(record.period, now):
            return False
        table: dict = self._counts if isinstance(record, TenantSpend) else self._reserved
        counts = table.setdefault((record.tenant, record.period, record.period_start), {})
        kept = counts.get(record.partition)
        if kept is not None and kept.offset >= record.offset:
            return False
        counts[record.partition] = record
        return True

    def prune(self, now: float | None = None) -> None:
        """Drop the periods before the previous one."""
        now = time.time() if now is None else now
        oldest = {p: oldest_kept(p, now) for p in PERIODS}
        for table in (self._counts, self._reserved):
            for key in [k for k in table if k[2] < oldest[k[1]]]:
                del table[key]


class TopicFollower:
    """Read every partition of ``topic`` from its start, then follow it, calling ``apply`` with
    each record in offset order per partition."""

    def __init__(self, settings: KafkaSettings, topic: str, apply: Callable[[Any], None],
                 configs: dict[str, str], isolation_level: str = "read_uncommitted") -> None:
        self.settings = settings
        self.isolation_level = isolation_level
        self.topic = topic
        self.apply = apply
        self.configs = configs
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        try:  # one partition: small topics, read whole by every router
            await create_topics(self.settings, [self.topic], partitions=1, configs=self.configs)
        except KafkaAdminError as e:  # it may exist already, created with other settings
            log.warning("could not create topic %s: %s", self.topic, e)
        consumer = await start_topic_reader(self.settings, self.topic, self.isolation_level)
        try:
            while not consumer.assignment():  # no group: every partition, once known
                await asyncio.sleep(_POLL_S)
            self._partitions = sorted(consumer.assignment())
            self._consumer = consumer
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for msgs in batches.values():
                    for msg in msgs:
                        self.apply(msg)
                for tp in self._partitions:  # past compacted gaps and transaction markers too
                    self._positions[tp] = await consumer.position(tp)
        finally:
            self._consumer = None
            await consumer.stop()

    async def synced(self) -> None:
        """Return once every record on the topic now has been applied."""
        while self._consumer is None or len(self._positions) < len(self._partitions):
            await asyncio.sleep(_POLL_S)
        end = await self._consumer.end_offsets(self._partitions)
        while any(self._positions.get(tp, 0) < end[tp] for tp in self._partitions):
            await asyncio.sleep(_POLL_S)


class Tenants:
    """The policies and the spend one router process knows, kept current from their topics."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.policies = Policies()
        self.spend = Spend()
        self.ready = asyncio.Event()  # both topics read to their end once
        self.policy_follower = TopicFollower(settings, settings.policies, self._apply_policy,
                                             POLICIES_CONFIG)
        self.spend_follower = TopicFollower(
            settings, settings.spend, partial(self._apply_count, TenantSpend), SPEND_CONFIG)
        self.reservation_follower = TopicFollower(
            settings, settings.reservations, partial(self._apply_count, TenantReservation),
            SPEND_CONFIG, isolation_level="read_committed")
        self._reserving: set[int] = set()  # partitions of prompts.in caught up with, when taken
        self._announced: set[tuple[str, float, str, int]] = set()
        self._pruned = 0.0

    async def follow(self) -> None:
        """Read the three topics to their end (then ``ready``), and keep following them."""
        followers = (self.policy_follower, self.spend_follower, self.reservation_follower)
        following = [asyncio.ensure_future(f.run()) for f in followers]
        synced = asyncio.ensure_future(asyncio.gather(*(f.synced() for f in followers)))
        try:
            await asyncio.wait([synced, *following], return_when=asyncio.FIRST_COMPLETED)
            for task in following:
                if task.done():  # a follower that failed before its topic was read: say why
                    task.result()
                    names = ", ".join(f.topic for f in followers)
                    raise RuntimeError(f"stopped following {names}")
            self.spend.prune()
            self.ready.set()
            log.warning("tenants: %d policies from %s, spend from %s, reservations from %s",
                        len(self.policies), self.settings.policies, self.settings.spend,
                        self.settings.reservations)
            for tenant in self.policies.tenants():
                self._announce_if_spent(tenant)
            await asyncio.gather(*following)
        finally:
            for task in (synced, *following):
                task.cancel()

    def budgets(self, now: float | None = None) -> list[tuple[str, str, float, float]]:
        """(tenant, period, spend this period, budget) of each tenant whose policy has a budget
        (its metrics)."""
        now = time.time() if now is None else now
        out = []
        for tenant in self.policies.tenants():
            found = self.policies.get(tenant)
            if found is None or found[0].budget_usd is None or found[0].period is None:
                continue
            period = found[0].period
            out.append((tenant, period, self.spend.total(tenant, period, period_start(period, now)),
                        found[0].budget_usd))
        return out

    async def reservations_caught_up(self, partitions: set[int]) -> None:
        """Before the first batch of a partition of prompts.in assigned here: what its previous
        owner reserved has been read, so this router adds to the latest running sums."""
        new = partitions - self._reserving
        if new:
            await self.reservation_follower.synced()
            self._reserving |= new

    def revoked(self, partitions: Iterable[int]) -> None:
        """Partitions of prompts.in revoked: their reservations are read again if they return."""
        self._reserving -= set(partitions)

    def _apply_policy(self, msg) -> None:
        policy = self.policies.apply(msg.key, msg.value, msg.offset)
        if policy is not None:
            self._announce_if_spent(policy.tenant)

    def _apply_count(self, kind: type[TenantSpend | TenantReservation], msg) -> None:
        try:
            record = decode(kind, msg.value)
        except SchemaError as e:
            log.error("ignored a malformed %s record at offset %d: %s", kind.__name__,
                      msg.offset, e)
            return
        self.record_spend(record)

    def record_spend(self, record: TenantSpend | TenantReservation) -> None:
        """Apply a spend or reservation record (read back, or just written by this process's
        counter or agent)."""
        now = time.time()
        if period_start("hour", now) != self._pruned:  # drop what ended, once an hour
            self._pruned = period_start("hour", now)
            self.spend.prune(now)
            self._announced = {a for a in self._announced if a[1] >= oldest_kept(a[2], now)}
        if self.spend.apply(record, now) and isinstance(record, TenantSpend):
            self._announce_if_spent(record.tenant)

    def _announce_if_spent(self, tenant: str) -> None:
        """Log once per period and policy revision when a tenant's spend reaches its budget
        (once both topics have been read to their end)."""
        found = self.policies.get(tenant)
        if not self.ready.is_set() or found is None or found[0].budget_usd is None:
            return
        policy, revision = found
        period = policy.period
        assert period is not None  # the event's validator: a budget has a period
        start = period_start(period, time.time())
        spent = self.spend.total(tenant, period, start)
        if spent < policy.budget_usd or (tenant, start, period, revision) in self._announced:
            return
        self._announced.add((tenant, start, period, revision))
        then = ("go to its cheapest allowed model" if policy.on_exhausted == "cheapest"
                else "are dead-lettered (budget_exceeded)")
        log.warning("tenant %r has spent its budget: %.6f of %s USD this %s (policy revision "
                    "%d); its prompts %s", tenant, spent, policy.budget_usd, period, revision,
                    then)
