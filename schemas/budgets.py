"""What a decision and an answer say of a tenant's budget: the policy a decision applied
(`AppliedPolicy`) and the share of the budget a prompt holds while it is in flight
(`Reservation`), docs/design.md, "Tenant policies and budgets"."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from schemas.fields import Count, NonNegative, OnExhausted, Period, Tenant, Timestamp


class AppliedPolicy(BaseModel):
    """Which tenant policy a decision applied (the `policy` of RoutedPrompt and RoutingDecision):
    the tenant, the policy's revision (its offset on `router.policies`) and its budget's state."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    tenant: Tenant
    revision: Count = Field(description="the policy record's offset on router.policies")
    budget_usd: NonNegative | None = None
    period: Period | None = None
    on_exhausted: OnExhausted = "cheapest"
    exhausted: StrictBool = Field(
        default=False, description="the budget could not hold the prompt at its own τ (the "
        "committed spend had reached it, or the choice's estimated cost would pass it): routed "
        "at τ = 1, or dead-lettered under reject")


class Reservation(BaseModel):
    """What the router reserved of the prompt's tenant's budget when it routed it (the `reservation`
    of ModelResponse, copied from the routed prompt): the answer settles it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    usd: NonNegative = Field(description="the routed prompt's reserved_usd")
    at: Timestamp = Field(description="when it was reserved (the routed prompt's routed_at): the "
                          "periods it is settled in")
