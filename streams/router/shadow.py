"""A candidate artifact version scoring in shadow beside the live one: its decisions go to
``router.shadow``, nothing is routed by them.

Control: on ``router.control``, key ``shadow``, a ``ModelUpdate`` names the version to score in
shadow (it is loaded like a live version: from its location or rebuilt from the artifact-files
topic, verified, refused whole when it does not check out); a tombstone stops it. A starting
router applies the latest message of the key, as it does the latest live version. Promotion is
the version announced on key ``artifacts`` (the live hot swap, between batches) and the shadow
stopped (``ipr shadow promote``).

Per batch, after the live outputs are sent, the prompts the live version routed are scored by the
shadow version with what the live routing used (τ, allowed models, unhealthy models, the rule):
:func:`shadow_decisions`, a pure function. When both versions have the same encoder files (a
recalibration changes only per-model files) the shadow shares the live encoder and takes the
batch's embeddings: it costs the adapters and the rule only. The live path is unchanged: routing
uses the live scorer alone, and a shadow that fails is logged and counted, never raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from ipr_model.serving.decision import decide
from ipr_model.serving.rule import Variant
from ipr_model.serving.scorer import Scorer
from schemas import RoutingDecision
from schemas.vectors import pack
from streams.router import metrics
from streams.router.routing import Routed
from streams.router.scorers import ScorerHolder
from streams.router.settings import RouterSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowDecision:
    partition: int  # of the prompts.in record it came from
    key: bytes  # the prompt id, as on router.decisions
    decision: RoutingDecision


def shadow_decisions(
    routed: Sequence[Routed], scorer: Scorer, live: Scorer, variant: Variant = "ipr",
    delta: float = 0.0, unhealthy: Collection[str] = (), explore_share: float = 0.0,
    unserved: Collection[str] = (),
) -> list[ShadowDecision]:
    """The ``scorer`` version's decision for every prompt the ``live`` version routed, with the
    τ and allowed models the live routing used (and its exploration: the same prompts explore);
    each keeps the live decision's ids and times, carries the shadow's version and scores, and
    names the live version in ``shadow_of``."""
    if not routed:
        return []
    texts = [r.prompt.text for r in routed]
    if scorer.encoder is live.encoder and all(r.embedding is not None for r in routed):
        scores = scorer.score_embeddings(np.stack([r.embedding for r in routed]), texts)
    else:
        scores = scorer.score(texts)
    decided = decide(scorer, scores, [r.prompt.tolerance for r in routed],
                     [r.prompt.allowed_models for r in routed], variant=variant, delta=delta,
                     unhealthy=unhealthy, prompt_ids=[r.prompt.prompt_id for r in routed],
                     explore_share=explore_share, unserved=unserved)
    out = []
    for r, d, emb in zip(routed, decided, scores.embeddings, strict=True):
        fields = r.decision.model_dump()
        fields.update(
            model_id=d.model_id, tolerance=d.tolerance, threshold=d.threshold,
            predicted_quality=d.predicted_quality, estimated_cost_usd=d.estimated_cost_usd,
            feedback_adjustment=d.feedback_adjustment, unhealthy_models=d.unhealthy_models,
            unserved_models=d.unserved_models,
            ranking=d.ranking, router_version=scorer.version, variant=d.rule, reason=d.reason,
            embedding=pack(emb), shadow_of=r.decision.router_version,
        )
        out.append(ShadowDecision(r.partition, r.key, RoutingDecision(**fields)))
    return out


class Shadow:
    """The router's shadow version: a second scorer holder, empty until a version is started."""

    def __init__(self, settings: RouterSettings, live: ScorerHolder) -> None:
        self.settings = settings
        self.live = live
        self.holder = ScorerHolder(settings.artifacts, settings.encoder_threads, partner=live,
                                   what="shadow artifacts", swaps=metrics.SHADOW_LOADS,
                                   on_load=None)

    def scorer(self) -> Scorer | None:
        """The shadow scorer, None when none runs or it is the live version (promoted)."""
        shadow, live = self.holder.loaded(), self.live.loaded()
        if shadow is None or (live is not None and shadow.version == live.version):
            return None
        return shadow

    def stop(self) -> None:
        version = self.holder.clear()
        if version is not None:
            log.warning("shadow stopped (was %s)", version)

    def decisions(self, routed: Sequence[Routed], live: Scorer,
                  unhealthy: Collection[str] = (),
                  unserved: Collection[str] = ()) -> list[ShadowDecision]:
        """The shadow's decisions for a routed batch ([] when no shadow runs). A failure is
        logged (its kind, never a prompt's text) and counted; it is never raised."""
        scorer = self.scorer()
        if scorer is None or not routed:
            return []
        s = self.settings
        t0 = time.perf_counter()
        try:
            out = shadow_decisions(routed, scorer, live, s.variant, s.delta, unhealthy,
                                   s.explore_share, unserved)
        except Exception as e:  # noqa: BLE001 - the shadow must never stop the router
            out = self._one_by_one(routed, scorer, live, unhealthy, unserved, e)
        metrics.SHADOW_SECONDS.observe(time.perf_counter() - t0)
        live_choice = {r.key: r.prompt.model_id for r in routed}
        for d in out:
            same = d.decision.model_id == live_choice[d.key]
            metrics.SHADOW_DECISIONS.labels("agree" if same else "differ").inc()
        return out

    def _one_by_one(self, routed, scorer, live, unhealthy, unserved,
                    error) -> list[ShadowDecision]:
        """A batch the shadow failed on, scored prompt by prompt: only the failing ones are
        left out (logged and counted)."""
        s, out, failed = self.settings, [], 0
        for r in routed:
            try:
                out += shadow_decisions([r], scorer, live, s.variant, s.delta, unhealthy,
                                        s.explore_share, unserved)
            except Exception:  # noqa: BLE001 - counted below
                failed += 1
        metrics.SHADOW_FAILURES.inc(failed)
        if failed:
            log.error("shadow version %s failed on %d of %d prompts (%s); routing is unaffected",
                      scorer.version, failed, len(routed), type(error).__name__)
        return out
