"""The joint part of the adapters: an item-response model fitted on every model's outcomes at once.

Each prompt i has a latent trait vector θ_i = e_i·P (``rank`` dimensions: a linear map of its
frozen embedding, the *prompt side*, shared by every model), each model m an ability vector a_m
and an intercept b_m, and the chance that m answers i well is σ(θ_i·a_m + b_m). This is the
compensatory multidimensional 2PL item-response model (the model of MIRT-BERT, RouterArena's
strongest router) with the encoder frozen; a matrix factorisation with a logistic link is the same
model. Why IRT and not squared-error factorisation: the outcomes are pass/fail or scores in
[0, 1], and the logistic likelihood is theirs. What it adds over the per-model parts: P is
estimated from all M models' outcomes, so the embedding directions that carry how hard a prompt
is and which skill it needs are learned from M times more labels than any one model's head sees.

Like the MLP part it has K members: member k fits on every fold of train prompts but k, so every
train prompt gets an out-of-fold prediction (the trainer's blend and calibration are chosen on
those); serving averages the members' probabilities.

Files: ``joint/prompt.npy`` [K, d, r] at the artifact root (the prompt side); each adapter keeps
its ability [K, r] and intercept [K]. A new model (``ipr add-model``) fits only its ability against
the artifact's frozen prompt side (per member, a logistic regression on θ), so every other file
keeps its bytes. Serving is numpy only; torch is imported by ``fit_joint`` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

PROMPT_SIDE = "joint/prompt.npy"


@dataclass(frozen=True)
class PromptSide:
    """The shared map from a prompt's embedding to its latent traits, one per member."""

    weights: np.ndarray  # [K, d, r] float32

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.weights.shape)  # type: ignore[return-value]

    def theta(self, emb: np.ndarray) -> np.ndarray:
        """[n, K, r]: every member's traits of each embedding (one matmul)."""
        k, d, r = self.weights.shape
        flat = self.weights.transpose(1, 0, 2).reshape(d, k * r)
        return (np.asarray(emb, dtype=np.float32) @ flat).reshape(len(emb), k, r)

    def save(self, root: Path) -> None:
        path = Path(root) / PROMPT_SIDE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.save(f, self.weights.astype(np.float32))

    @classmethod
    def load(cls, root: Path) -> PromptSide:
        w = np.load(Path(root) / PROMPT_SIDE, allow_pickle=False)
        if w.ndim != 3 or not np.isfinite(w).all():
            raise ValueError(f"{PROMPT_SIDE}: expected finite [members, dim, rank] weights, "
                             f"got shape {w.shape}")
        return cls(w.astype(np.float32))


def prompt_side_loader(root: Path) -> Callable[[], PromptSide | None]:
    """A loader that reads the artifact's prompt side once, on first use (None: it has none)."""
    return cache(lambda: PromptSide.load(root) if (Path(root) / PROMPT_SIDE).is_file() else None)


def joint_quality(theta: np.ndarray, ability: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """[n, M]: the members' mean of σ(θ·a + b), for traits ``theta`` [n, K, r], abilities
    [K, r, M] and intercepts [K, M]."""
    z = np.einsum("nkr,krm->nkm", theta, ability) + intercept
    return (1.0 / (1.0 + np.exp(-z))).mean(axis=1)


def fit_joint(
    emb: np.ndarray, targets: np.ndarray, folds: np.ndarray, rank: int, epochs: int, lr: float,
    weight_decay: float, seed: int, prompt: PromptSide | None = None,
) -> tuple[PromptSide, np.ndarray, np.ndarray, np.ndarray]:
    """Fit the joint part on ``emb`` [n, d] and ``targets`` [n, M] (quality in [0, 1], soft
    targets), member k on the prompts whose ``folds`` [n] is not k. With ``prompt`` given, only
    the abilities are fitted against it, frozen (``ipr add-model``). Returns the prompt side, the
    abilities [M, K, r], the intercepts [M, K] and the out-of-fold predictions [n, M]."""
    import torch

    n, d = emb.shape
    m, k = targets.shape[1], int(folds.max()) + 1
    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    fold = torch.from_numpy(np.asarray(folds, dtype=np.int64))
    mask = (fold[None, :] != torch.arange(k)[:, None]).float()  # [K, n]
    if prompt is None:
        p = torch.randn(k, d, rank) * (16.0 / d) ** 0.5  # traits of unit-norm embeddings ~ N(0, 1)
        learned = [p.requires_grad_()]
    else:
        p, learned = torch.from_numpy(prompt.weights.astype(np.float32)), []
        rank = p.shape[2]
    a = (torch.randn(k, rank, m) * 0.1).requires_grad_()
    prior = y.mean(dim=0).clamp(0.02, 0.98)
    b = torch.log(prior / (1 - prior))[None, :].repeat(k, 1).requires_grad_()
    opt = torch.optim.AdamW([*learned, a, b], lr=lr, weight_decay=weight_decay)
    target = y[None].expand(k, n, m)

    def logits() -> torch.Tensor:
        return (x[None] @ p) @ a + b[:, None, :]  # [K, n, M]

    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits(), target, reduction="none").mean(dim=2)
        ((loss * mask).sum(dim=1) / mask.sum(dim=1)).sum().backward()
        opt.step()
    with torch.no_grad():
        prob = torch.sigmoid(logits())
        oof = prob[fold, torch.arange(n)].numpy().astype(np.float64)  # member fold[i] on row i
    side = prompt or PromptSide(p.detach().numpy().astype(np.float32))
    return (side, a.detach().permute(2, 0, 1).numpy().astype(np.float32),
            b.detach().T.numpy().astype(np.float32), oof)
