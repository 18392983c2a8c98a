"""Recalibration from quality feedback: a new artifact version from labels on routed prompts.

For each model with new labels (the prompts' embeddings and the observed quality of that model's
answers), a candidate adapter starts from the current one:

- the MLP members are fine-tuned on the new labels with the old weights as the starting point and
  an L2 pull back to them (the guard against forgetting: ``anchor``);
- the ridge head is refitted in closed form toward its old weights (the same guard);
- the kNN part and the memory are kept (adding the labelled prompts to the memory was tried: on
  ``make drift``'s replayed prompts it memorised them and lowered the realised quality);
- the calibration is refitted on the candidate's predictions of the new labels, pooled with
  pseudo-labels drawn from the old calibration so that a narrow batch of labels does not erase it.

A guardrail scores the candidate and the current version on a held-out share of the labels they did
not train on (Brier score); the candidate is published only if it is not worse. Only models whose
candidate passed get new files; every other file of the artifact keeps its bytes, the manifest
names the parent version, and the directory is written beside its target and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ipr_model.adapters import Adapter
from ipr_model.artifacts import Manifest, read_manifest, write_manifest
from ipr_model.calibration import FITS
from ipr_model.cards import ModelCard, memory_loader
from ipr_model.errors import IprError

HOLDOUT = 0.3
MIN_LABELS = 10


@dataclass(frozen=True)
class RecalConfig:
    epochs: int = 80
    lr: float = 3e-3
    anchor: float = 1e-2  # L2 pull of the MLP weights back to the current version's
    ridge_anchor: float = 10.0  # penalty on the ridge weights' distance from the current ones
    prior_labels: int = 200  # pseudo-labels from the old calibration, pooled with the new labels
    seed: int = 0


@dataclass
class ModelResult:
    model_id: str
    labels: int
    brier_current: float
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


def finetune_mlp(a: Adapter, x: np.ndarray, y: np.ndarray, cfg: RecalConfig) -> tuple[np.ndarray, ...]:
    import torch

    torch.manual_seed(cfg.seed)
    old = [torch.from_numpy(np.array(p, dtype=np.float32)) for p in (a.w1, a.b1, a.w2, a.b2)]
    params = [p.clone().requires_grad_() for p in old]
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for _ in range(cfg.epochs):
        opt.zero_grad()
        w1, b1, w2, b2 = params
        hid = torch.relu(torch.einsum("nd,kdh->knh", xt, w1) + b1[:, None, :])
        logits = (hid * w2[:, None, :]).sum(dim=2) + b2[:, None]  # [K, n]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, yt.expand_as(logits)
        )
        loss = loss + cfg.anchor * sum(((p - o) ** 2).sum() for p, o in zip(params, old))
        loss.backward()
        opt.step()
    return tuple(p.detach().numpy().astype(np.float32) for p in params)


def refit_ridge(a: Adapter, x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """argmin ||x w + b - y||^2 + alpha ||w - w_old||^2 (intercept unpenalised), closed form."""
    x64, y64, w0 = x.astype(np.float64), y.astype(np.float64), a.lin_w.astype(np.float64)
    mu, ym = x64.mean(axis=0), y64.mean()
    xc = x64 - mu
    w = w0 + np.linalg.solve(xc.T @ xc + alpha * np.eye(len(w0)), xc.T @ (y64 - ym - xc @ w0))
    b = ym - mu @ w
    return w.astype(np.float32), np.array(b, dtype=np.float32)


def candidate_card(card: ModelCard, x: np.ndarray, y: np.ndarray, cfg: RecalConfig) -> ModelCard:
    a = card.adapter
    w1, b1, w2, b2 = finetune_mlp(a, x, y, cfg)
    lin_w, lin_b = refit_ridge(a, x, y, cfg.ridge_anchor)
    new = replace(a, w1=w1, b1=b1, w2=w2, b2=b2, lin_w=lin_w, lin_b=lin_b)
    raw = new.raw(x)
    # Pseudo-labels from the old calibration keep its shape where the new labels say nothing.
    rng = np.random.default_rng(cfg.seed)
    px = rng.uniform(card.calibration.x.min(), card.calibration.x.max(), cfg.prior_labels)
    cal = FITS[card.calibration.kind](np.r_[raw, px], np.r_[y, card.calibration(px)])
    info = {**card.info, "recalibrated_on": int(len(y))}
    return replace(card, adapter=new, calibration=cal, info=info)


def brier(card: ModelCard, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((card.quality(x) - y) ** 2))


def recalibrate(
    root: Path,
    labels: dict[str, tuple[np.ndarray, np.ndarray]],
    out: Path,
    cfg: RecalConfig = RecalConfig(),
) -> RecalResult:
    """Write a new version of the artifacts at ``root`` to ``out`` from ``labels``:
    model id -> (embeddings [n, d], observed quality [n]). Returns what was published."""
    current = read_manifest(root)
    unknown = sorted(set(labels) - set(current.models))
    if unknown:
        raise IprError(f"feedback for model(s) not in the artifacts: {', '.join(unknown)}")
    memory = memory_loader(Path(root))
    results, accepted = [], []
    for model_id, (x, y) in sorted(labels.items()):
        x, y = np.asarray(x, np.float32), np.clip(np.asarray(y, np.float64), 0.0, 1.0)
        if len(y) < MIN_LABELS:
            continue
        perm = np.random.default_rng(cfg.seed).permutation(len(y))
        cut = max(1, int(round(len(y) * HOLDOUT)))
        test, fit = perm[:cut], perm[cut:]
        card = ModelCard.load(Path(root), model_id, memory)
        cand = candidate_card(card, x[fit], y[fit], cfg)
        b_cur, b_new = brier(card, x[test], y[test]), brier(cand, x[test], y[test])
        ok = b_new <= b_cur
        results.append(ModelResult(model_id, int(len(y)), b_cur, b_new, ok))
        if ok:
            # The published adapter learns from every label (the holdout only judged it).
            accepted.append(candidate_card(card, x, y, cfg))
    if not accepted:
        return RecalResult(version=None, location=None, models=results)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copytree(root, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("manifest.json"))
        for card in accepted:
            card.save(tmp)
        write_manifest(tmp, current.models, current.carried_over(), parent=current.version)
        if out.exists():
            raise IprError(f"{out} already exists: a new version needs a new directory")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = read_manifest(out)
    return RecalResult(version=manifest.version, location=out, models=results, manifest=manifest)
