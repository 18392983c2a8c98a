"""Serving: load a verified artifact directory and score prompts (numpy, onnxruntime, tokenizers).

``Scorer.score(texts)`` runs the encoder once on the batch and every adapter on the embeddings, and
returns the calibrated predicted quality and the estimated cost of every model for every prompt.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ipr_model.artifacts.manifest import ENCODER_DIR, Manifest, read_manifest
from ipr_model.errors import ArtifactError, RoutingInputError
from ipr_model.serving.adapters import AdapterStack
from ipr_model.serving.calibration import Calibrations
from ipr_model.serving.cards import ModelCard, memory_loader
from ipr_model.serving.costs import prompt_tokens
from ipr_model.serving.explore import explore_choice, explored
from ipr_model.serving.joint import prompt_side_loader
from ipr_model.serving.rule import (
    Variant,
    allowed_mask,
    applied_rule,
    check_tolerance,
    feasible_mask,
    ranking,
    route_batch,
)


@dataclass(frozen=True)
class Scores:
    quality: np.ndarray  # [n, m] predicted quality (calibrated, then corrected by feedback)
    cost: np.ndarray  # [n, m] estimated USD
    embeddings: np.ndarray  # [n, d]
    feedback: np.ndarray | None = None  # [n, m] what the feedback corrections added (None: none)


@dataclass(frozen=True)
class Decision:
    model_id: str
    threshold: float
    tolerance: float
    predicted_quality: dict[str, float]
    estimated_cost_usd: dict[str, float]
    feedback_adjustment: dict[str, float] | None = None  # models whose estimate feedback moved
    unhealthy_models: list[str] | None = None  # candidates left out as unhealthy
    # the rule this prompt got (``ipr_model.serving.rule.applied_rule``), or "explore"
    rule: str = "ipr"
    # why an explored prompt went where it did (ipr_model.serving.explore)
    reason: str | None = None
    # the failover order: the choice, then the rule's feasible candidates in the rule's order
    ranking: list[str] | None = None


def predict(
    cards: Sequence[ModelCard], emb: np.ndarray, texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Predicted quality and estimated cost [n, m] of every card's model for every prompt, and
    what the cards' feedback corrections added to the quality (None when no card has one)."""
    stack = _stack(cards)
    base = stack.calibrations(stack.adapters.raw(emb))
    cost = stack.cost_intercept + prompt_tokens(list(texts))[:, None] * stack.cost_per_token
    if not stack.corrected:
        return base, cost, None
    q = base.copy()
    for j in stack.corrected:
        q[:, j] = cards[j].correction(base[:, j], emb)
    return q, cost, q - base


def serial_blas() -> None:
    """Run numpy's BLAS on the calling thread only, for the whole process.

    The adapters' matmuls are small; multi-threaded OpenBLAS gains nothing on them, and its
    worker threads keep spinning after each call, taking the cores onnxruntime's encoder (and a
    router's Kafka consumer) need next: on 2 cores, single-prompt scoring went from 32 to 13 ms
    p50 with this (``python -m benchmarks model-bench``).
    """
    threadpool_limits(limits=1, user_api="blas")


class CardStack:
    """A version's cards evaluated together (the serving fast path): their adapters, their
    calibrations and their cost models each one computation for every model, no loop per card
    but for the few with a feedback correction."""

    def __init__(self, cards: Sequence[ModelCard]):
        self.cards = list(cards)
        self.adapters = AdapterStack([c.adapter for c in cards])
        self.calibrations = Calibrations([c.calibration for c in cards])
        self.cost_intercept = np.array([c.cost.intercept_usd for c in cards])
        self.cost_per_token = np.array([c.cost.usd_per_prompt_token for c in cards])
        self.corrected = [j for j, c in enumerate(cards) if c.correction is not None]


# The last cards, stacked once; two, so that a router scoring a version in shadow beside the
# live one does not stack both again for every batch.
_STACK: list[CardStack] = []
_STACKS_KEPT = 2


def _stack(cards: Sequence[ModelCard]) -> CardStack:
    for stack in _STACK:
        if len(stack.cards) == len(cards) and all(
            a is b for a, b in zip(stack.cards, cards, strict=True)
        ):
            return stack
    _STACK[:] = [CardStack(cards), *_STACK][:_STACKS_KEPT]
    return _STACK[0]


def encoder_files(manifest: Manifest) -> dict[str, str]:
    """The sha256 of each file of the manifest's encoder."""
    return {k: v for k, v in manifest.data["files"].items() if k.startswith(f"{ENCODER_DIR}/")}


class Scorer:
    onboarding: frozenset[str] = frozenset()

    def __init__(self, manifest: Manifest, encoder, cards: list[ModelCard]):
        self.manifest = manifest
        self.encoder = encoder
        self.cards = cards
        self.model_ids = [c.id for c in cards]
        # Models with prices and no outcomes yet: routed to only by exploration (explore.py).
        self.onboarding = frozenset(c.id for c in cards if c.info.get("onboarding"))

    @property
    def version(self) -> str:
        return self.manifest.version

    @classmethod
    def load(
        cls, root: str | Path, verify: bool = True, encoder_threads: int | None = None,
        reuse: Scorer | None = None,
    ) -> Scorer:
        """``encoder_threads``: onnxruntime's intra-op threads (default: every core).
        ``reuse``: a loaded scorer whose encoder is taken when its files are the same bytes
        (a recalibrated version changes only per-model files: a hot swap then builds no second
        encoder session, and memory stays level)."""
        from ipr_model.serving.encoder import OnnxEncoder

        serial_blas()
        manifest = read_manifest(root, verify=verify)
        if reuse is not None and encoder_files(reuse.manifest) == encoder_files(manifest):
            encoder = reuse.encoder
        else:
            encoder = OnnxEncoder.load(manifest.root / ENCODER_DIR, encoder_threads)
        memory = memory_loader(manifest.root)  # read once, shared by every card that uses it
        prompt = prompt_side_loader(manifest.root)  # one prompt side for the joint parts
        cards = [ModelCard.load(manifest.root, m, memory, prompt) for m in manifest.models]
        for c in cards:
            if c.adapter.dim != encoder.dim:
                raise ArtifactError(
                    f"{root}: adapter of {c.id!r} expects {c.adapter.dim}-d embeddings, "
                    f"the encoder gives {encoder.dim}-d"
                )
        return cls(manifest, encoder, cards)

    def score_embeddings(self, emb: np.ndarray, texts: Sequence[str]) -> Scores:
        q, cost, shift = predict(self.cards, emb, texts)
        return Scores(quality=q, cost=cost, embeddings=emb, feedback=shift)

    def score(self, texts: Sequence[str]) -> Scores:
        for i, t in enumerate(texts):
            if not t or not t.strip():
                raise RoutingInputError(f"prompt {i} is empty: expected non-empty text")
        return self.score_embeddings(self.encoder.encode(list(texts)), texts)

    def decide(
        self,
        scores: Scores,
        tolerances: Sequence[float],
        allowed: Sequence[Sequence[str] | None] | None = None,
        variant: Variant = "ipr",
        delta: float = 0.0,
        unhealthy: Collection[str] = (),
        prompt_ids: Sequence[str] | None = None,
        explore_share: float = 0.0,
    ) -> list[Decision]:
        """Apply the rule per prompt (each with its own tolerance and allowed models). Models in
        ``unhealthy`` are left out of a prompt's candidates, unless that would leave none: then
        it is routed among its unhealthy candidates (their worker answers with an error, and the
        prompt is not lost). Onboarding models are left out of the rule's candidates likewise;
        with ``prompt_ids``, the ``explore_share`` of them explores
        (:mod:`ipr_model.serving.explore`)."""
        n = len(tolerances)
        taus = np.array([check_tolerance(t) for t in tolerances])
        masks = np.stack(
            [allowed_mask(self.model_ids, (allowed[i] if allowed else None)) for i in range(n)]
        )
        healthy = np.array([m not in unhealthy for m in self.model_ids])
        left_out = masks & ~healthy
        left_out[~(masks & healthy).any(axis=1)] = False
        candidates = masks & ~left_out
        ruled = candidates & ~np.array([m in self.onboarding for m in self.model_ids])
        ruled[~ruled.any(axis=1)] = candidates[~ruled.any(axis=1)]
        chosen, thr = route_batch(
            scores.quality, scores.cost, taus, self.model_ids, ruled, variant, delta
        )
        rules = applied_rule(ruled, variant).astype(object)
        feasible = feasible_mask(scores.quality, thr, ruled)
        reasons = self._explore(scores, candidates, chosen, rules, prompt_ids, explore_share)
        out = []
        for i in range(n):
            ids = [m for m, ok in zip(self.model_ids, masks[i], strict=True) if ok]
            out.append(
                Decision(
                    model_id=self.model_ids[chosen[i]],
                    threshold=float(thr[i]),
                    tolerance=float(taus[i]),
                    predicted_quality={
                        m: float(scores.quality[i, j])
                        for j, m in enumerate(self.model_ids)
                        if m in ids
                    },
                    estimated_cost_usd={
                        m: float(scores.cost[i, j])
                        for j, m in enumerate(self.model_ids)
                        if m in ids
                    },
                    feedback_adjustment=None if scores.feedback is None else {
                        m: round(float(scores.feedback[i, j]), 6)
                        for j, m in enumerate(self.model_ids)
                        if m in ids and abs(scores.feedback[i, j]) >= 1e-6
                    } or None,
                    unhealthy_models=[
                        m for m, out_ in zip(self.model_ids, left_out[i], strict=True) if out_
                    ]
                    or None,
                    rule=str(rules[i]),
                    reason=reasons[i],
                    ranking=self._ranking(scores, feasible, i, self.model_ids[chosen[i]]),
                )
            )
        return out

    def _ranking(self, scores: Scores, feasible: np.ndarray, i: int, choice: str) -> list[str]:
        """Prompt i's failover order: its model (an explored prompt's is outside the rule's
        choice), then the rule's feasible models in the rule's order of preference."""
        ranked = ranking(scores.quality[i], scores.cost[i], feasible[i], self.model_ids)
        return [choice, *(m for m in ranked if m != choice)]

    def _explore(self, scores: Scores, candidates: np.ndarray, chosen: np.ndarray,
                 rules: np.ndarray, prompt_ids: Sequence[str] | None,
                 share: float) -> list[str | None]:
        """Send the explored prompts to their exploration model (``chosen`` and ``rules`` are
        updated in place); the reason of each prompt (None: routed by the rule)."""
        reasons: list[str | None] = [None] * len(chosen)
        if not prompt_ids or share <= 0:
            return reasons
        for i, pid in enumerate(prompt_ids):
            if not explored(pid, share):
                continue
            lowered = None if scores.feedback is None else scores.feedback[i]
            pick = explore_choice(pid, self.model_ids, candidates[i], self.onboarding, lowered)
            if pick is not None and pick[0] != chosen[i]:
                chosen[i], rules[i], reasons[i] = pick[0], "explore", pick[1]
        return reasons
