"""Serving: load a verified artifact directory and score prompts (numpy, onnxruntime, tokenizers).

``Scorer.score(texts)`` runs the encoder once on the batch and every adapter on the embeddings, and
returns the calibrated predicted quality and the estimated cost of every model for every prompt;
it only scores: the candidates are narrowed in :mod:`ipr_model.serving.candidates`, the decisions
made in :mod:`ipr_model.serving.decision`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ipr_model.artifacts.manifest import ENCODER_DIR, Manifest, read_manifest
from ipr_model.errors import ArtifactError, RoutingInputError
from ipr_model.serving.adapters import AdapterStack
from ipr_model.serving.calibration import Calibrations
from ipr_model.serving.cards import ModelCard, index_loader, memory_loader
from ipr_model.serving.costs import prompt_tokens
from ipr_model.serving.joint import prompt_side_loader


@dataclass(frozen=True)
class Scores:
    quality: np.ndarray  # [n, m] predicted quality (calibrated, then corrected by feedback)
    cost: np.ndarray  # [n, m] estimated USD
    embeddings: np.ndarray  # [n, d]
    feedback: np.ndarray | None = None  # [n, m] what the feedback corrections added (None: none)


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


def reference_model(cards: Sequence[ModelCard]) -> str | None:
    """The version's reference model: the one with the highest mean recorded quality on its
    train split (its card's ``train.mean_quality``; ties to the smaller id), the model ``ipr
    evaluate`` and the demo weigh savings against (an onboarding model, with no outcomes yet, is
    never it). None when no card records one."""
    known = [(-float(c.info["train"]["mean_quality"]), c.id) for c in cards
             if isinstance(c.info.get("train"), dict) and not c.info.get("onboarding")
             and c.info["train"].get("mean_quality") is not None]
    return min(known)[1] if known else None


class Scorer:
    onboarding: frozenset[str] = frozenset()
    reference: str | None = None  # what always routing there would cost: reference_model

    def __init__(self, manifest: Manifest, encoder, cards: list[ModelCard]):
        self.manifest = manifest
        self.encoder = encoder
        self.cards = cards
        self.model_ids = [c.id for c in cards]
        # Models with prices and no outcomes yet: left out of the rule's candidates, routed to only
        # by exploration (candidates.py).
        self.onboarding = frozenset(c.id for c in cards if c.info.get("onboarding"))
        self.reference = reference_model(cards)

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
        index = index_loader(manifest.root, memory)  # the memory's ANN index, if it has one
        cards = [ModelCard.load(manifest.root, m, memory, prompt, index)
                 for m in manifest.models]
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
