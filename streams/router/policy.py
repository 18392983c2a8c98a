"""Tenant policies as pure functions: budget periods, and what a policy makes of one prompt.

A policy (``schemas.TenantPolicy``) is narrowed by its prompts, never widened:

- τ: a smaller τ leaves fewer models feasible (τ = 0: the best predicted model only, τ = 1: every
  candidate, so the cheapest wins). The prompt's τ is used when it is at most the tenant's; a
  larger one is cut to the tenant's. A prompt without τ gets the tenant's, else the router's
  default.
- allowed models: the prompt's and the policy's are intersected (models the router does not
  know are dropped from the policy's: ``ipr_model.serving.candidates.tenant_allowed``, where the
  rest of a prompt's candidates are narrowed); nothing left is dead-lettered as ``not_allowed``.
- the budget: once the tenant's committed spend in the current period (a UTC calendar hour, day
  or month; answered and in flight: :mod:`streams.router.budget`) has reached ``budget_usd``, or
  the prompt's choice would take it past, ``cheapest`` routes at τ = 1 among the allowed models
  (the prompt's own τ no longer counts), ``reject`` dead-letters as ``budget_exceeded``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ipr_model.serving.candidates import tenant_allowed
from schemas import AppliedPolicy, TenantPolicy

PERIODS: tuple[str, ...] = ("hour", "day", "month")


def period_start(period: str, t: float) -> float:
    """The start (epoch seconds) of the UTC calendar hour, day or month holding time ``t``."""
    d = datetime.fromtimestamp(t, UTC)
    if period == "hour":
        d = d.replace(minute=0, second=0, microsecond=0)
    elif period == "day":
        d = d.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == "month":
        d = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
    return d.timestamp()


def oldest_kept(period: str, now: float) -> float:
    """The start of the period before the current one: spend of older periods is not kept."""
    return period_start(period, period_start(period, now) - 1.0)


@dataclass(frozen=True)
class Verdict:
    """What a prompt is routed with, or why it is dead-lettered (``dead``: kind and reason)."""

    tolerance: float
    allowed: list[str] | None
    policy: AppliedPolicy | None = None
    spend_usd: float | None = None
    reason: str | None = None  # the decision's reason, when the policy changed the routing
    dead: tuple[str, str] | None = None


def apply_policy(
    tolerance: float | None,
    allowed: Sequence[str] | None,
    default_tolerance: float,
    policy: TenantPolicy | None = None,
    revision: int = 0,
    spend_usd: float = 0.0,
    known: Sequence[str] | None = None,
) -> Verdict:
    """The τ and allowed models of a prompt (its own ``tolerance`` and ``allowed``) under its
    tenant's ``policy`` (at ``revision``), the tenant's spend in the current period being
    ``spend_usd``; ``known``: the models the router knows (None: any)."""
    if policy is None:
        return Verdict(default_tolerance if tolerance is None else tolerance,
                       None if allowed is None else list(allowed))
    tau = _narrow_tolerance(tolerance, policy.tolerance, default_tolerance)
    budget = policy.budget_usd
    exhausted = budget is not None and spend_usd >= budget
    applied = AppliedPolicy(
        tenant=policy.tenant, revision=revision, budget_usd=budget, period=policy.period,
        on_exhausted=policy.on_exhausted, exhausted=exhausted,
    )
    spend = None if budget is None else spend_usd
    models = tenant_allowed(allowed, policy.allowed_models, known)
    if models is not None and not models:
        return Verdict(tau, [], applied, spend, dead=("not_allowed", (
            f"tenant {policy.tenant!r}: no model is allowed both by the prompt's "
            f"allowed_models and by the tenant's policy (revision {revision}, which allows "
            f"{', '.join(policy.allowed_models or ())})")))
    if not exhausted:
        return Verdict(tau, models, applied, spend)
    if policy.on_exhausted == "reject":
        return Verdict(tau, models, applied, spend,
                       dead=("budget_exceeded", budget_exceeded(applied, spend_usd)))
    return Verdict(1.0, models, applied, spend, reason="budget_exhausted")


def budget_exceeded(policy: AppliedPolicy, committed: float,
                    estimate: float | None = None) -> str:
    """The reason of a ``budget_exceeded`` dead letter: the committed spend, the budget and,
    when the budget had room left, the estimate that did not fit."""
    room = "" if estimate is None or committed >= (policy.budget_usd or 0.0) else (
        f", and this prompt's model is estimated at {estimate:.6f} USD")
    return (f"tenant {policy.tenant!r} has committed {committed:.6f} USD this {policy.period} "
            f"(answered and in flight), its budget being {policy.budget_usd} USD{room} (policy "
            f"revision {policy.revision}, on_exhausted=reject)")


def _narrow_tolerance(own: float | None, tenant: float | None, default: float) -> float:
    if own is None:
        return default if tenant is None else tenant
    return own if tenant is None else min(own, tenant)
