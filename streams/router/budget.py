"""Budgets that hold while prompts are in flight: reservations, as pure functions (no Kafka).

A tenant's spend is known only once its answers are counted (:mod:`streams.router.spend`), seconds
after its prompts were routed; a budget checked against it alone lets every prompt routed in
between go at full price. So the router counts what is committed:

- **reserve**: a budgeted tenant's routed prompt carries ``reserved_usd``, its model's estimated
  cost, and the router adds it to a running sum per (tenant, period, period start, partition of
  ``prompts.in``) on ``router.reservations`` (:func:`reserve`): one writer per key, the router
  that owns the partition, and the offset of the last prompt counted, so a prompt read again
  after a crash is not reserved twice;
- **settle**: the worker copies the reservation into its answer (``ModelResponse.reservation``)
  and the spend counter adds it to ``settled_usd`` next to the answer's real ``cost_usd`` (an
  error answer costs nothing: its reservation is released);
- a tenant's **committed** spend in a period = spend + reserved − settled
  (``streams.router.tenants.Spend.committed``).

Within a batch, :class:`BatchBudgets` adds each prompt's reservation as it is decided, so the
next prompt of the tenant sees it; :func:`over_budget` is the rule: a prompt fits when the
committed spend plus its estimated cost stays within the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from schemas import TenantReservation
from streams.router.policy import PERIODS, oldest_kept, period_start

ReservationLookup = Callable[[str, str, float, int], TenantReservation | None]


@dataclass(frozen=True)
class Reserved:
    """One routed prompt's reservation: its tenant, where it was read, what and when."""

    tenant: str
    partition: int  # of prompts.in
    offset: int
    usd: float
    at: float  # routed_at: the periods it counts in


def reserve(items: Iterable[Reserved], known: ReservationLookup,
            now: float) -> list[TenantReservation]:
    """The reservation records that ``items`` (in offset order per partition) move: for each, its
    hour, day and month, each the running sum from the record ``known`` has for that key. An item
    at or below a record's offset was counted already (read again after a crash or a
    rebalance); periods before the previous one are not counted."""
    moved: dict[tuple[str, str, float, int], TenantReservation] = {}
    for it in items:
        for period in PERIODS:
            start = period_start(period, it.at)
            if start < oldest_kept(period, now):
                continue
            key = (it.tenant, period, start, it.partition)
            base = moved.get(key) or known(it.tenant, period, start, it.partition)
            if base is not None and it.offset <= base.offset:
                continue
            moved[key] = TenantReservation(
                tenant=it.tenant, period=period, period_start=start, partition=it.partition,
                reserved_usd=(0.0 if base is None else base.reserved_usd) + it.usd,
                prompts=(0 if base is None else base.prompts) + 1,
                offset=it.offset, updated_at=now,
            )
    return list(moved.values())


def over_budget(committed: float, estimate: float, budget: float) -> bool:
    """Whether a prompt whose model is estimated at ``estimate`` USD does not fit: the committed
    spend has reached the budget, or the estimate would take it past. Stopping at the prompt that
    would pass it, not after it, keeps the spend within the budget when the estimates are right
    (stopping once it is reached overshoots by part of a prompt: 5-10% of a budget of 10)."""
    return committed >= budget or committed + estimate > budget


class BatchBudgets:
    """The committed spend a batch's prompts see: the view's when the batch started, plus what the
    batch reserved before them."""

    def __init__(self, committed: Callable[[str, str], float], known: ReservationLookup,
                 now: float) -> None:
        self._committed = committed  # (tenant, period) -> the view's committed spend now
        self._known = known
        self.now = now
        self.added: dict[tuple[str, str], float] = {}

    def seen(self, tenant: str, period: str, added: dict[tuple[str, str], float]) -> float:
        return self._committed(tenant, period) + added.get((tenant, period), 0.0)

    def counted(self, tenant: str, period: str, partition: int, offset: int) -> bool:
        """Whether the prompt at ``offset`` of ``partition`` was reserved already (read again
        after a crash or a rebalance): its reservation is in the committed spend."""
        known = self._known(tenant, period, period_start(period, self.now), partition)
        return known is not None and offset <= known.offset
