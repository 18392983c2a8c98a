"""A batch's routing decisions from its scores: the candidates narrowed
(:mod:`ipr_model.serving.candidates`), the rule applied among them
(:mod:`ipr_model.serving.rule`), explored prompts sent where exploration says.

``decide(scorer, scorer.score(texts), tolerances, ...)``: what the router, its shadow, ``ipr
route`` and the lab all run.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from ipr_model.serving.candidates import Candidates, narrow
from ipr_model.serving.rule import (
    Variant,
    applied_rule,
    check_tolerance,
    feasible_mask,
    ranking,
    route_batch,
)
from ipr_model.serving.scorer import Scorer, Scores


@dataclass(frozen=True)
class Decision:
    model_id: str
    threshold: float
    tolerance: float
    predicted_quality: dict[str, float]
    estimated_cost_usd: dict[str, float]
    feedback_adjustment: dict[str, float] | None = None  # models whose estimate feedback moved
    unhealthy_models: list[str] | None = None  # candidates left out as unhealthy
    unserved_models: list[str] | None = None  # candidates left out: no live worker serves them
    # the rule this prompt got (``ipr_model.serving.rule.applied_rule``), or "explore"
    rule: str = "ipr"
    # why an explored prompt went where it did (ipr_model.serving.explore)
    reason: str | None = None
    # the failover order: the choice, then the rule's feasible candidates in the rule's order
    ranking: list[str] | None = None


def decide(
    scorer: Scorer,
    scores: Scores,
    tolerances: Sequence[float],
    allowed: Sequence[Sequence[str] | None] | None = None,
    variant: Variant = "ipr",
    delta: float = 0.0,
    unhealthy: Collection[str] = (),
    prompt_ids: Sequence[str] | None = None,
    explore_share: float = 0.0,
    unserved: Collection[str] = (),
) -> list[Decision]:
    """Decide every prompt ``scores`` holds (the ``scorer``'s), each with its own tolerance and
    allowed models: its candidates are narrowed by ``allowed``, ``unserved``, ``unhealthy`` and the
    scorer's onboarding models, and with ``prompt_ids`` the ``explore_share`` of them explores
    (:func:`ipr_model.serving.candidates.narrow`); the rule chooses among the rest."""
    n = len(tolerances)
    taus = np.array([check_tolerance(t) for t in tolerances])
    ids = scorer.model_ids
    cands = narrow(ids, n, allowed, unhealthy, scorer.onboarding, prompt_ids, explore_share,
                   scores.feedback, unserved)
    chosen, thr = route_batch(scores.quality, scores.cost, taus, ids, cands.ruled, variant, delta)
    rules = applied_rule(cands.ruled, variant).astype(object)
    feasible = feasible_mask(scores.quality, thr, cands.ruled)
    reasons: list[str | None] = [None] * n
    for i, pick in enumerate(cands.explore):
        if pick is not None and pick[0] != chosen[i]:
            chosen[i], rules[i], reasons[i] = pick[0], "explore", pick[1]
    return [
        _decision(i, scores, cands, ids[chosen[i]], float(thr[i]), float(taus[i]), str(rules[i]),
                  reasons[i], feasible[i])
        for i in range(n)
    ]


def _decision(i: int, scores: Scores, cands: Candidates, choice: str, threshold: float,
              tolerance: float, rule: str, reason: str | None,
              feasible: np.ndarray) -> Decision:
    """Prompt i's decision: the scores of the models it allows, its failover order (its model,
    an explored prompt's being outside the rule's choice, then the rule's feasible models in the
    rule's order of preference)."""
    ids, mine = cands.model_ids, cands.allowed[i]
    fb = scores.feedback
    ranked = ranking(scores.quality[i], scores.cost[i], feasible, ids)
    return Decision(
        model_id=choice,
        threshold=threshold,
        tolerance=tolerance,
        predicted_quality={m: float(scores.quality[i, j]) for j, m in enumerate(ids) if mine[j]},
        estimated_cost_usd={m: float(scores.cost[i, j]) for j, m in enumerate(ids) if mine[j]},
        feedback_adjustment=None if fb is None else {
            m: round(float(fb[i, j]), 6)
            for j, m in enumerate(ids)
            if mine[j] and abs(fb[i, j]) >= 1e-6
        } or None,
        unhealthy_models=cands.unhealthy(i) or None,
        unserved_models=cands.unserved(i) or None,
        rule=rule,
        reason=reason,
        ranking=[choice, *(m for m in ranked if m != choice)],
    )
