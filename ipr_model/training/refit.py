"""Recalibration from quality feedback: a new artifact version from labels on routed prompts.

For each model with labels (the prompts' embeddings and the observed quality of that model's
answers), the candidate card is the current one with a new local correction
(:mod:`ipr_model.serving.corrections`) fitted on every label: the adapter, the calibration and the
kNN memory are kept as trained, and each label pulls the estimate of the prompts near it toward what
was observed. A model that fails one task loses that task's traffic and keeps the rest.

Refitting the adapters and the calibration was this module's first design (the MLP fine-tuned
toward the labels, the ridge head refitted, the calibration refitted with pseudo-labels from the
old one): it recovered the degraded task as fast, but the refitted calibration moved every prompt,
so the model lost its other tasks too (``make drift``: cruxeval 0.20 -> 0.00 and math 0.33 -> 0.00
of its traffic when it failed gsm8k; with corrections they keep theirs: docs/measurements.md,
"The feedback loop").

A guardrail scores the candidate and the uncorrected card on a held-out share of the labels the
candidate did not see (Brier score): the correction must help where it was not fitted, or the
current version stays, and a current correction the labels no longer support is taken away.
(The current version's own correction is not the yardstick: it was fitted on labels that may be
in the held-out share.) Only models whose candidate passed get new files;
every other file of the artifact keeps its bytes (a hard link to the parent's file where the
filesystem allows: a version costs its changed files, not a copy of the encoder), the manifest
names the parent version, and the directory is written beside its target and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ipr_model.artifacts.manifest import (
    Manifest,
    link_or_copy,
    model_dir,
    read_manifest,
    write_manifest,
)
from ipr_model.errors import IprError
from ipr_model.serving.cards import ModelCard, index_loader, memory_loader
from ipr_model.serving.corrections import BAND, RADIUS, STRENGTH, Correction
from ipr_model.serving.joint import prompt_side_loader
from ipr_model.training.onboard import ONBOARDING, fitted_card, prior_card

HOLDOUT = 0.3
MIN_LABELS = 10
MIN_WEIGHT = 0.5**10


@dataclass(frozen=True)
class RecalConfig:
    radius: float = RADIUS  # cosine beyond which a label does not reach a prompt
    strength: float = STRENGTH  # weight of nearby labels that moves an estimate half way
    band: float = BAND  # outcome standard deviations of a shift that are not a change
    half_life_s: float = 7 * 24 * 3600.0  # a label's weight halves with every this much age
    seed: int = 0  # of the held-out split
    graduate_labels: int = 100  # labels after which an onboarding model is routed normally


@dataclass
class ModelResult:
    model_id: str
    labels: int
    brier_uncorrected: float  # of the estimator without correction, on the held-out labels
    brier_candidate: float
    published: bool

    def as_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass
class RecalResult:
    version: str | None  # the new version, None when nothing passed the guardrail
    location: Path | None
    models: list[ModelResult] = field(default_factory=list)
    manifest: Manifest | None = None


def candidate_card(card: ModelCard, x: np.ndarray, y: np.ndarray, w: np.ndarray,
                   cfg: RecalConfig) -> ModelCard:
    """``card`` with a correction fitted on labels ``y`` at embeddings ``x``, weighted ``w``
    (replacing its own). An onboarding card gets its ability fitted instead (onboard.py)."""
    if card.info.get(ONBOARDING):
        return fitted_card(card, x, y, cfg.graduate_labels)
    base = uncorrected(card)
    fix = Correction.fit(base.quality(x), x, y, w, cfg.radius, cfg.strength, cfg.band)
    return replace(card, correction=fix, info={**card.info, "feedback_labels": int(len(y))})


def yardstick(card: ModelCard) -> ModelCard:
    """What a candidate must beat on held-out labels: the card without its correction; for an
    onboarding card, its prior (its current fit saw labels that may be held out now)."""
    return prior_card(card) if card.info.get(ONBOARDING) else uncorrected(card)


def uncorrected(card: ModelCard) -> ModelCard:
    return replace(card, correction=None)


def brier(card: ModelCard, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(np.average((card.quality(x) - y) ** 2, weights=w))


def recalibrate(
    root: Path,
    labels: dict[str, tuple[np.ndarray, ...]],
    out: Path,
    cfg: RecalConfig = RecalConfig(),
) -> RecalResult:
    """Write a new version of the artifacts at ``root`` to ``out`` from ``labels``:
    model id -> (embeddings [n, d], observed quality [n]) or (embeddings, quality, age in
    seconds [n]); a label's weight halves every ``cfg.half_life_s`` of age (no age: weight 1).
    Returns what was published."""
    current = read_manifest(root)
    unknown = sorted(set(labels) - set(current.models))
    if unknown:
        raise IprError(f"feedback for model(s) not in the artifacts: {', '.join(unknown)}")
    memory, prompt = memory_loader(Path(root)), prompt_side_loader(Path(root))
    index = index_loader(Path(root), memory)
    results, accepted = [], []
    for model_id, (x, y, *age) in sorted(labels.items()):
        x, y = np.asarray(x, np.float32), np.clip(np.asarray(y, np.float64), 0.0, 1.0)
        age_s = np.asarray(age[0], np.float64) if age else np.zeros(len(y))
        if not len(x) == len(y) == len(age_s):
            raise IprError(f"labels of {model_id}: expected as many embeddings, qualities and "
                           f"ages, got {len(x)}, {len(y)}, {len(age_s)}")
        w = 0.5 ** (np.maximum(age_s, 0.0) / cfg.half_life_s)
        keep = w >= MIN_WEIGHT  # labels older than ten half-lives are dropped
        x, y, w = x[keep], y[keep], w[keep]
        if len(y) < MIN_LABELS:
            continue
        perm = np.random.default_rng(cfg.seed).permutation(len(y))
        cut = max(1, int(round(len(y) * HOLDOUT)))
        test, fit = perm[:cut], perm[cut:]
        card = ModelCard.load(Path(root), model_id, memory, prompt, index)
        cand = candidate_card(card, x[fit], y[fit], w[fit], cfg)
        b_cur = brier(yardstick(card), x[test], y[test], w[test])
        b_new = brier(cand, x[test], y[test], w[test])
        # Strictly better: a correction inside its band everywhere changes nothing, and a
        # version that changes nothing is not worth a hot swap in every router.
        ok = b_new < b_cur
        # Labels that no longer support a correction take the current one away: a model that
        # failed and recovered wins its traffic back (exploration brings it the labels).
        clear = not ok and card.correction is not None and not card.info.get(ONBOARDING)
        results.append(ModelResult(model_id, int(len(y)), b_cur, b_new, ok or clear))
        if ok:
            # The published correction uses every label (the holdout only judged it).
            accepted.append(candidate_card(card, x, y, w, cfg))
        elif clear:
            accepted.append(replace(uncorrected(card),
                                    info={**card.info, "feedback_labels": int(len(y))}))
    if not accepted:
        return RecalResult(version=None, location=None, models=results)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # Unchanged files are hard links to the current version's (the encoder alone is 57 MB);
        # a corrected model's folder is written anew, so no shared file is ever written to.
        shutil.copytree(root, tmp, dirs_exist_ok=True, copy_function=link_or_copy,
                        ignore=shutil.ignore_patterns("manifest.json"))
        for card in accepted:
            shutil.rmtree(tmp / model_dir(card.id))
            card.save(tmp)
        write_manifest(tmp, current.models, current.carried_over(), parent=current.version)
        if out.exists():
            raise IprError(f"{out} already exists: a new version needs a new directory")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = read_manifest(out)
    return RecalResult(version=manifest.version, location=out, models=results, manifest=manifest)
