"""The control-plane events: artifact versions, model health, tenant policies and spend
(docs/design.md, "Topics and events"). Field types and rules: `schemas.fields`.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, StrictBool, StringConstraints, model_validator

from schemas import limits as L
from schemas.fields import (
    Count,
    ErrorText,
    Event,
    Label,
    ModelId,
    ModelList,
    NonNegative,
    Number,
    OnExhausted,
    Period,
    Probability,
    Tenant,
    Timestamp,
)


class ModelUpdate(Event):
    """A new model artifact is ready; routers hot-swap to it. Topic `router.control`, key
    `artifacts`; on key `shadow`, the version every router scores in shadow (a tombstone stops
    it)."""

    version: Label
    location: Annotated[str, StringConstraints(min_length=1, max_length=L.MAX_LOCATION_CHARS)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="sha256 of the artifact's manifest"
    )
    models: ModelList


class WorkerServing(Event):
    """What a running worker serves. Topic `router.control`, key `serving:<worker>`; a tombstone
    when the worker stops.

    A worker announces again every ``ttl_s / 3``; routers route only among the models that a
    worker announced within its ``ttl_s`` (a worker killed without a tombstone drops out when its
    last announcement expires).
    """

    worker: Label = Field(description="the worker process (host:pid)")
    models: ModelList
    announced_at: Timestamp
    ttl_s: Annotated[Number, Field(gt=0, le=3_600)] = Field(
        description="seconds after announced_at that the announcement holds")

    def live(self, now: float) -> bool:
        return now < self.announced_at + self.ttl_s


class ModelHealth(Event):
    """A worker's report on its model's backend. Topic `router.control`, key `health:<model_id>`.

    Routers leave a model reported unhealthy out of the candidates until ``reported_at + ttl_s``
    (a worker that keeps failing reports again before then) or until a report says healthy.
    """

    model_id: ModelId
    healthy: StrictBool
    worker: Label = Field(description="the reporting worker process")
    consecutive_errors: Count = Field(
        description="calls in a row that failed (an error response, or forwarded to the next "
        "model by failover)"
    )
    error: ErrorText | None = Field(default=None, description="the last error, when unhealthy")
    reported_at: Timestamp
    ttl_s: Annotated[Number, Field(gt=0, le=86_400)] = Field(
        description="seconds after reported_at that an unhealthy report holds"
    )


class TenantPolicy(Event):
    """A tenant's routing policy. Topic `router.policies` (compacted), key = tenant; a tombstone
    removes it. Its prompts narrow it, never widen it (`streams.router.policy`)."""

    tenant: Tenant
    tolerance: Probability | None = Field(
        default=None, description="the tenant's τ: the default of its prompts and the highest "
        "one they may use (none: the router's default, and no ceiling)")
    allowed_models: ModelList | None = Field(
        default=None, description="the models its prompts may go to (none: every model)")
    budget_usd: NonNegative | None = Field(
        default=None, description="USD the tenant may spend per period (none: no budget)")
    period: Period | None = Field(
        default=None, description="the budget's period, a UTC calendar hour, day or month")
    on_exhausted: OnExhausted = Field(
        default="cheapest", description="once the budget is spent: cheapest (τ = 1 among the "
        "allowed models) or reject (dead-letter, budget_exceeded)")
    updated_at: Timestamp | None = None

    @model_validator(mode="after")
    def _budget_has_a_period(self) -> Self:
        if (self.budget_usd is None) != (self.period is None):
            raise ValueError("budget_usd and period go together: a budget is per hour, day or "
                             f"month (got budget_usd={self.budget_usd}, period={self.period})")
        return self


class TenantSpend(Event):
    """One partition of `responses.out`'s count of a tenant's spend in one period: the sum of
    `cost_usd` of the tenant's responses there, up to `offset`, and of the reservations they
    settled. Topic `router.spend` (compacted), key `schemas.topics.spend_key`; a tenant's spend in
    a period is the sum over partitions."""

    tenant: Tenant
    period: Period
    period_start: Timestamp = Field(description="the period's start (UTC), epoch seconds")
    partition: Count = Field(description="the responses.out partition counted")
    spend_usd: NonNegative
    responses: Count = Field(description="responses counted")
    offset: Count = Field(description="the offset of the last response counted")
    updated_at: Timestamp
    settled_usd: NonNegative = Field(
        default=0.0, description="the reservations (ModelResponse.reservation) its responses "
        "settled, counted in the periods of their reservation; absent from older counters: 0")


class TenantReservation(Event):
    """One partition of `prompts.in`'s count of what its router reserved of a tenant's budget
    in one period: the sum of `reserved_usd` of the tenant's prompts routed from there, up to
    `offset`. Topic `router.reservations` (compacted), key `schemas.topics.spend_key`. A tenant's
    committed spend in a period: its spend, plus its reservations less what answers settled."""

    tenant: Tenant
    period: Period
    period_start: Timestamp = Field(description="the period's start (UTC), epoch seconds")
    partition: Count = Field(description="the prompts.in partition counted")
    reserved_usd: NonNegative
    prompts: Count = Field(description="prompts counted")
    offset: Count = Field(description="the offset of the last prompt counted")
    updated_at: Timestamp
