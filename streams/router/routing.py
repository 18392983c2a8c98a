"""The router's decision path as a pure function: a batch of raw records in, routed prompts,
decisions and dead letters out. No Kafka, no Faust: the agent only calls :func:`route_records`.

Every record ends in exactly one of ``routed`` or ``dead``: nothing is dropped. A record is
dead-lettered when it is not a valid PromptRequest (the codec's kind), when its allowed_models name
a model the router does not know (``unknown_model``), when its Kafka key is set and differs from
its ``prompt_id`` (``key_mismatch``: every output is keyed by ``prompt_id``, so a consumer that
correlates by the input key would lose it), when its tenant's policy leaves it no model
(``not_allowed``) or rejects it once its budget cannot hold it (``budget_exceeded``:
:mod:`streams.router.policy`, :mod:`streams.router.budget`), and when scoring it fails
(``routing_error``: a batch that fails is scored again record by record, so one strange prompt
does not take the others with it).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import partial

import numpy as np

from ipr_model.serving.candidates import unknown_models
from ipr_model.serving.decision import decide
from ipr_model.serving.rule import Variant
from ipr_model.serving.scorer import Scores
from ipr_model.serving.views import DEFAULT_VIEW, View, scored_text
from schemas import (
    DeadLetter,
    PromptRequest,
    RoutedPrompt,
    RoutingDecision,
    SchemaError,
    TenantReservation,
    decode,
)
from schemas.events import REQUEST_FIELDS
from schemas.topics import model_topic
from schemas.vectors import pack
from streams.router.budget import BatchBudgets, Reserved, over_budget, reserve
from streams.router.policy import apply_policy, budget_exceeded
from streams.router.tool_loop import VARIANT, ToolCalls, pinned_model

_MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class Record:
    """A consumed record, as the agent hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    received_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Routed:
    topic: str
    key: bytes
    partition: int  # of the prompts.in record it came from
    prompt: RoutedPrompt
    decision: RoutingDecision
    # the prompt's embedding as the encoder gave it (a shadow version with the same encoder
    # scores it again without encoding: streams.router.shadow)
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    offset: int = -1  # of the prompts.in record it came from
    # what the prompt would cost on the version's reference model (``Scorer.reference``,
    # allowed or not), for the estimated saving; None when the version names no reference
    reference_cost_usd: float | None = None


@dataclass
class BatchResult:
    routed: list[Routed] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    scoring_ms: float = 0.0
    # the running sums the batch moved on router.reservations (streams.router.budget)
    reservations: list[TenantReservation] = field(default_factory=list)


def _dead(rec: Record, error: str, kind: str) -> DeadLetter:
    return DeadLetter.build(
        source_topic=rec.topic, partition=rec.partition, offset=rec.offset, key=rec.key,
        value=rec.value, error=error, error_kind=kind,
    )


def route_records(
    records: Sequence[Record],
    scorer,
    default_tolerance: float,
    variant: Variant = "ipr",
    delta: float = 0.0,
    unhealthy: Collection[str] = (),
    explore_share: float = 0.0,
    tenants=None,
    unserved: Collection[str] = (),
    view: View = DEFAULT_VIEW,
    tool_calls: ToolCalls | None = None,
    reserve_budgets: bool = True,
) -> BatchResult:
    """Validate, score (one scorer call for the batch, a conversation by its ``view``) and route
    every record, leaving the ``unserved`` and ``unhealthy`` models out where a prompt has other
    candidates (``streams.control``), under its tenant's policy and committed spend
    (``tenants``: ``streams.router.tenants.Tenants``; None: none), a budgeted tenant's prompts
    reserving their estimated cost (``reserve_budgets``: :mod:`streams.router.budget`); the
    ``explore_share`` of prompts explores (``ipr_model.serving.explore``); a tool result goes to
    the model that made the call (``tool_calls``: ``streams.router.tool_loop``)."""
    out = BatchResult()
    now = time.time()
    valid = [v for v in (_validate(rec, scorer.model_ids, out.dead) for rec in records) if v]
    budgets = None if tenants is None or not reserve_budgets else BatchBudgets(
        lambda t, p: tenants.spend.current(t, p, now), tenants.spend.reservation, now)
    valid = [v for v in (_under_policy(rec, req, tenants, default_tolerance, scorer.model_ids,
                                       now, out.dead, budgets) for rec, req in valid) if v]
    if not valid:
        return out
    t0 = time.perf_counter()
    route = partial(_route, scorer=scorer, variant=variant, delta=delta, unhealthy=unhealthy,
                    explore_share=explore_share, unserved=unserved, view=view,
                    tool_calls=tool_calls, budgets=budgets)
    try:
        routed, dead = route(valid)
        out.routed, out.dead = routed, out.dead + dead
    except Exception:  # noqa: BLE001 - find the record that fails; route the others
        for one in valid:
            try:
                routed, dead = route([one])
                out.routed, out.dead = out.routed + routed, out.dead + dead
            except Exception as e:  # noqa: BLE001 - a routing bug must not lose the prompt
                reason = f"{type(e).__name__}: {e}"[:_MAX_REASON_CHARS]
                out.dead.append(_dead(one[0], f"scoring failed: {reason}", "routing_error"))
    out.scoring_ms = (time.perf_counter() - t0) * 1000.0
    if budgets is not None:
        assert tenants is not None
        out.reservations = reserve(
            (Reserved(r.prompt.tenant, r.partition, r.offset, r.prompt.reserved_usd,
                      r.prompt.routed_at) for r in out.routed
             if r.prompt.reserved_usd is not None and r.prompt.tenant is not None),
            tenants.spend.reservation, now)
    return out


def _validate(rec: Record, known: Sequence[str], dead: list[DeadLetter]):
    """``(rec, request)``, or None after adding the record's dead letter to ``dead``."""
    try:
        req = decode(PromptRequest, rec.value)
    except SchemaError as e:
        dead.append(_dead(rec, str(e), e.kind))
        return None
    if rec.key is not None and rec.key != req.prompt_id.encode():
        dead.append(_dead(rec, "the record's key is not its prompt_id (outputs are keyed by "
                               "prompt_id)", "key_mismatch"))
        return None
    unknown = unknown_models(known, req.allowed_models)
    if unknown:
        dead.append(_dead(
            rec,
            f"unknown model(s) in allowed_models: {', '.join(unknown)}; "
            f"this router knows {len(known)} models",
            "unknown_model",
        ))
        return None
    return rec, req


def _under_policy(rec: Record, req: PromptRequest, tenants, default_tolerance: float,
                  known: Sequence[str], now: float, dead: list[DeadLetter],
                  budgets: BatchBudgets | None = None):
    """``(rec, request, verdict)`` under the tenant's policy, or None after adding the record's
    dead letter to ``dead``. A prompt reserved before a crash is weighed once scored (its own
    reservation is in the committed spend: ``_hold_budgets``)."""
    found = None if tenants is None else tenants.policies.get(req.tenant)
    policy, revision = found if found is not None else (None, 0)
    spend = 0.0
    if policy is not None and policy.period is not None and not (
            budgets is not None and budgets.counted(policy.tenant, policy.period,
                                                    rec.partition, rec.offset)):
        spend = tenants.spend.current(policy.tenant, policy.period, now)
    verdict = apply_policy(req.tolerance, req.allowed_models, default_tolerance, policy,
                           revision, spend, known)
    if verdict.dead is not None:
        dead.append(_dead(rec, verdict.dead[1], verdict.dead[0]))
        return None
    return rec, req, verdict


def _route(valid, *, scorer, variant, delta, unhealthy, explore_share, unserved, view,
           tool_calls, budgets: BatchBudgets | None) -> tuple[list[Routed], list[DeadLetter]]:
    scores = scorer.score([req.text if req.messages is None else scored_text(req.messages, view)
                           for _, req, _ in valid])
    pins = [pinned_model(req.messages, tool_calls, v.allowed) for _, req, v in valid]
    pins = [(m, why) if m is None or m in scorer.model_ids else (None, why) for m, why in pins]
    allowed = [[m] if m is not None else v.allowed
               for (_, _, v), (m, _) in zip(valid, pins, strict=True)]
    ids = [req.prompt_id for _, req, _ in valid]
    decide_ = partial(decide, scorer, variant=variant, delta=delta, unhealthy=unhealthy,
                      explore_share=explore_share, unserved=unserved)
    decisions = decide_(scores, [v.tolerance for _, _, v in valid], allowed, prompt_ids=ids)

    def cheapest(i: int):  # the prompt at τ = 1, when its budget cannot hold its choice
        one = Scores(**{f.name: None if getattr(scores, f.name) is None
                        else getattr(scores, f.name)[i:i + 1] for f in fields(Scores)})
        return decide_(one, [1.0], [allowed[i]], prompt_ids=[ids[i]])[0]

    dead: list[DeadLetter] = []
    reserved: list[float | None] = [None] * len(valid)
    added = None
    if budgets is not None:
        valid, decisions, reserved, added = _hold_budgets(valid, decisions, budgets, cheapest,
                                                          dead)
    now = time.time()
    routed = []
    ref = scorer.reference
    ref_costs = (scores.cost[:, scorer.model_ids.index(ref)].tolist()
                 if ref in scorer.model_ids else [None] * len(scores.cost))
    for (rec, req, v), d, emb, (pin, why), usd, ref_usd in zip(
            valid, decisions, scores.embeddings, pins, reserved, ref_costs, strict=True):
        if d is None:  # dead-lettered: its budget could not hold it
            continue
        prompt = RoutedPrompt(
            prompt_id=req.prompt_id, tenant=req.tenant, allowed_models=v.allowed,
            sent_at=req.sent_at, model_id=d.model_id, tolerance=d.tolerance,
            threshold=d.threshold, predicted_quality=d.predicted_quality,
            estimated_cost_usd=d.estimated_cost_usd,
            feedback_adjustment=d.feedback_adjustment, unhealthy_models=d.unhealthy_models,
            unserved_models=d.unserved_models,
            ranking=d.ranking, router_version=scorer.version,
            routing_latency_ms=max(0.0, (now - rec.received_at) * 1000.0), routed_at=now,
            policy=v.policy, tenant_spend_usd=v.spend_usd, reserved_usd=usd,
            scored_view=None if req.messages is None else view,
            **{k: getattr(req, k) for k in REQUEST_FIELDS},
        )
        routed.append(Routed(
            topic=model_topic(d.model_id),
            key=req.prompt_id.encode(),
            partition=rec.partition,
            prompt=prompt,
            decision=prompt.to_decision(reason=why or d.reason or v.reason,
                                        variant=VARIANT if pin is not None else d.rule,
                                        embedding=pack(emb)),
            embedding=emb,
            offset=rec.offset,
            reference_cost_usd=ref_usd,
        ))
    if budgets is not None and added is not None:  # the next prompts see these reservations
        budgets.added = added
    return routed, dead


def _hold_budgets(valid, decisions, budgets: BatchBudgets, cheapest, dead: list[DeadLetter]):
    """Each budgeted prompt in turn against its tenant's committed spend and what the prompts
    before it reserved: one its budget cannot hold goes at τ = 1 (``cheapest(i)``: its decision
    there) or to ``dead`` (reject). Returns the prompts' verdicts, decisions (None: dead) and
    reservations (None: no budget), and what the batch has reserved by then."""
    valid, decisions = list(valid), list(decisions)
    reserved: list[float | None] = [None] * len(valid)
    added = dict(budgets.added)
    for i, ((rec, req, v), d) in enumerate(zip(valid, decisions, strict=True)):
        policy = v.policy
        if policy is None or policy.budget_usd is None or policy.period is None:
            continue
        key = (policy.tenant, policy.period)
        seen = budgets.seen(*key, added)
        estimate = d.estimated_cost_usd[d.model_id]
        # reserved before a crash (read again): its reservation is in the spend it is weighed on
        counted = budgets.counted(*key, rec.partition, rec.offset)
        own = min(seen, estimate) if counted else 0.0
        if not policy.exhausted and over_budget(seen - own, estimate, policy.budget_usd):
            if policy.on_exhausted == "reject":
                dead.append(_dead(rec, budget_exceeded(policy, seen, estimate), "budget_exceeded"))
                decisions[i] = None
                continue
            d = decisions[i] = cheapest(i)
            estimate = d.estimated_cost_usd[d.model_id]
            v = replace(v, tolerance=1.0, reason="budget_exhausted",
                        policy=policy.model_copy(update={"exhausted": True}))
        valid[i] = (rec, req, replace(v, spend_usd=seen))
        reserved[i] = estimate
        if not counted:
            added[key] = added.get(key, 0.0) + estimate
    return valid, decisions, reserved, added
