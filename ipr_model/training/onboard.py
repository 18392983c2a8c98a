"""Onboarding a model that has prices and no recorded outcomes.

``add_prices_only`` adds a card flagged ``onboarding``: its cost model comes from the list prices
(the expected answer length is the median of the other cards', until labels say otherwise), and
its adapter holds a constant prior (the artifact's mean train quality) in the joint part, so the
artifact format is the usual one and every reader loads it. The rule leaves onboarding models out
(``ipr_model.serving.candidates``); only exploration sends them prompts
(:mod:`ipr_model.serving.explore`).

Once feedback has labels for it, ``fitted_card`` fits its ability vector against the artifact's
frozen prompt side (the joint part, as ``ipr add-model`` does from a dataset, here from the
labels' embeddings): recalibration calls it instead of fitting a correction while the card is
onboarding, and clears the flag once ``graduate_labels`` labels were used: from that version on
it is routed like any model (and later labels correct it locally, like any model's).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ipr_model.artifacts.manifest import read_manifest, write_manifest
from ipr_model.errors import ArtifactError
from ipr_model.serving.adapters import Adapter
from ipr_model.serving.calibration import Calibration, fit_calibration, shrink
from ipr_model.serving.cards import ModelCard, load_memory
from ipr_model.serving.costs import MTOK, CostModel
from ipr_model.serving.joint import PromptSide, fit_joint, prompt_side_loader
from ipr_model.training.datasets import ModelInfo
from ipr_model.training.fitting import DEFAULT_CONFIG, fold_ids

ONBOARDING = "onboarding"
CALIBRATION_SHRINK = 0.5  # the trainer's on zeroeval and llmrouter (manifest calibration_shrink)
FEW_LABELS = 50  # below this many labels the fit is pulled further toward the labels' mean


def _logit(p: float) -> float:
    p = min(max(p, 0.02), 0.98)
    return float(np.log(p / (1 - p)))


def prior_adapter(memory: np.ndarray, side: PromptSide, prior: float) -> Adapter:
    """An adapter predicting ``prior`` everywhere: the joint part alone, ability 0."""
    k, d, r = side.shape
    return Adapter(
        w1=np.zeros((1, d, 1), np.float32), b1=np.zeros((1, 1), np.float32),
        w2=np.zeros((1, 1), np.float32), b2=np.zeros(1, np.float32),
        lin_w=np.zeros(d, np.float32), lin_b=np.float32(0.0), knn_k=np.float32(1.0),
        knn_y=np.zeros(len(memory), np.float32), memory=memory,
        parts=np.array([0, 0, 0, 1], np.float32), ability=np.zeros((k, r), np.float32),
        intercept=np.full(k, _logit(prior), np.float32), prompt=side,
    )


def prices_cost(info: ModelInfo, others: list[ModelCard]) -> CostModel:
    """The cost model from list prices; the expected answer length is the others' median."""
    if info.input_usd_per_mtok is None or info.output_usd_per_mtok is None:
        raise ArtifactError(f"model {info.id!r} has no prices in models.json")
    lengths = [c.cost.expected_output_tokens for c in others
               if c.cost.expected_output_tokens is not None]
    out = float(np.median(lengths)) if lengths else 500.0
    return CostModel(
        intercept_usd=out * info.output_usd_per_mtok / MTOK,
        usd_per_prompt_token=info.input_usd_per_mtok / MTOK, expected_output_tokens=out,
        input_usd_per_mtok=info.input_usd_per_mtok, output_usd_per_mtok=info.output_usd_per_mtok,
    )


def add_prices_only(root: Path, info: ModelInfo):
    """Add ``info``'s model to the artifact at ``root`` as an onboarding card (prices, a constant
    prior); every file already there keeps its bytes. Returns the new manifest."""
    old = read_manifest(root)
    if info.id in old.models:
        raise ArtifactError(f"{root}: model {info.id!r} is already in the artifacts")
    side = prompt_side_loader(Path(root))()
    if side is None:
        raise ArtifactError(f"{root}: onboarding needs an artifact with a joint part")
    others = [ModelCard.load(Path(root), m) for m in old.models]
    prior = float(np.mean([c.info.get("train", {}).get("mean_quality", 0.5) for c in others]))
    card = ModelCard(
        id=info.id, family=info.family, cost=prices_cost(info, others),
        calibration=Calibration.identity(),
        adapter=prior_adapter(load_memory(root), side, prior),
        info={ONBOARDING: True, "prior_quality": prior, "onboarding_labels": 0},
    )
    card.save(Path(root))
    write_manifest(Path(root), old.models + [info.id], old.carried_over(), parent=old.version)
    return read_manifest(root)


def prior_card(card: ModelCard) -> ModelCard:
    """An onboarding card as it was added: its constant prior, no fit, no correction."""
    side = card.adapter.prompt
    prior = float(card.info.get("prior_quality", 0.5))
    k, _, r = side.shape
    adapter = replace(card.adapter, ability=np.zeros((k, r), np.float32),
                      intercept=np.full(k, _logit(prior), np.float32))
    return replace(card, adapter=adapter, calibration=Calibration.identity(), correction=None)


def fitted_card(card: ModelCard, x: np.ndarray, y: np.ndarray,
                graduate_labels: int) -> ModelCard:
    """``card`` with its ability fitted on labels ``y`` at embeddings ``x`` against the frozen
    prompt side (each member on its folds, as in training); still onboarding below
    ``graduate_labels`` labels."""
    side = card.adapter.prompt
    if side is None:
        raise ArtifactError(f"{card.id}: an onboarding card needs the joint part")
    cfg = DEFAULT_CONFIG
    k = side.shape[0]
    _, ability, intercept, oof = fit_joint(
        np.asarray(x, np.float32), np.asarray(y, np.float64)[:, None],
        fold_ids(len(y), k, cfg.seed), side.shape[2], cfg.joint_epochs, cfg.joint_lr,
        cfg.weight_decay, cfg.seed, prompt=side)
    adapter = replace(card.adapter, ability=ability[0], intercept=intercept[0])
    # Calibrated on the members' out-of-fold predictions, pulled toward the labels' mean as the
    # trainer does (without it the joint part's probabilities cost 0.05 ARQGC on zeroeval), and
    # more so on few labels (on 21 the unshrunk fit's held-out Brier was 0.44, the prior's 0.28).
    y = np.asarray(y, np.float64)
    weight = min(CALIBRATION_SHRINK, len(y) / (len(y) + FEW_LABELS))
    cal = shrink(fit_calibration(oof[:, 0], y), float(y.mean()), weight)
    info = {**card.info, ONBOARDING: len(y) < graduate_labels, "onboarding_labels": int(len(y))}
    return replace(card, adapter=adapter, calibration=cal, correction=None, info=info)
