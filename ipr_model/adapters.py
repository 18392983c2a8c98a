"""Quality adapters: one small head per candidate model on the frozen sentence embedding.

An adapter is an ensemble of K small MLPs (embedding -> hidden -> 1, sigmoid), trained with binary
cross-entropy on the recorded quality (soft targets, so graded quality in [0, 1] works as is).
Member k trains on every fold but k, so each train prompt has an out-of-fold prediction, which is
what the per-model calibration is fitted on. Serving averages the members (numpy only).

Adapters are independent: training several at once (``train_adapters``) is the same computation
as training each alone (the losses add up and Adam updates each parameter on its own), so
``ipr add-model`` trains just the new model's adapter and leaves every other file untouched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class AdapterConfig:
    hidden: int = 16
    members: int = 5
    epochs: int = 150
    lr: float = 5e-3
    weight_decay: float = 1e-2
    dropout: float = 0.1
    seed: int = 0


@dataclass
class Adapter:
    """Weights of one model's ensemble: w1 [K, d, H], b1 [K, H], w2 [K, H], b2 [K]."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.w1.shape[1])

    def raw(self, emb: np.ndarray) -> np.ndarray:
        """Mean of the members' predicted quality, before calibration: [n]."""
        h = np.maximum(np.einsum("nd,kdh->knh", emb, self.w1) + self.b1[:, None, :], 0.0)
        z = np.einsum("knh,kh->kn", h, self.w2) + self.b2[:, None]
        return (1.0 / (1.0 + np.exp(-z))).mean(axis=0)

    def save(self, path: Path) -> None:
        # Written through a file object so np.savez adds no suffix; arrays are stored uncompressed
        # so the bytes (and the sha256) depend only on the weights.
        with open(path, "wb") as f:
            np.savez(f, w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2)

    @classmethod
    def load(cls, path: Path) -> "Adapter":
        with np.load(path, allow_pickle=False) as z:
            a = cls(*(z[k].astype(np.float32) for k in ("w1", "b1", "w2", "b2")))
        k, d, h = a.w1.shape
        if a.b1.shape != (k, h) or a.w2.shape != (k, h) or a.b2.shape != (k,):
            raise ValueError(f"{path}: inconsistent adapter shapes")
        return a


def fold_ids(n: int, members: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % members)


def train_adapters(
    emb: np.ndarray,
    targets: np.ndarray,
    cfg: AdapterConfig = AdapterConfig(),
    init: list[Adapter] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Adapter], np.ndarray]:
    """Train one adapter per column of ``targets`` [n, M] on ``emb`` [n, d].

    Returns the adapters and the out-of-fold predictions [n, M] (for calibration).
    ``init`` starts from existing weights (recalibration) instead of a random initialisation.
    """
    import torch

    n, d = emb.shape
    m = targets.shape[1]
    k, h = cfg.members, cfg.hidden
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(targets.T, dtype=np.float32))  # [M, n]
    folds = torch.from_numpy(fold_ids(n, k, cfg.seed))
    train_mask = (folds[None, :] != torch.arange(k)[:, None]).float()  # [K, n]

    if init is None:
        w1 = torch.randn(d, m, k, h) * (2.0 / d) ** 0.5
        b1 = torch.zeros(m, k, h)
        w2 = torch.randn(m, k, h) * (1.0 / h) ** 0.5
        prior = y.mean(dim=1).clamp(0.02, 0.98)
        b2 = torch.log(prior / (1 - prior))[:, None].repeat(1, k)
    else:
        w1 = torch.from_numpy(np.stack([a.w1 for a in init], axis=0)).permute(2, 0, 1, 3).contiguous()
        b1, w2, b2 = (torch.from_numpy(np.stack([getattr(a, f) for a in init]).copy())
                      for f in ("b1", "w2", "b2"))
    params = [p.requires_grad_() for p in (w1, b1, w2, b2)]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    denom = train_mask.sum(dim=1)[None, :]  # [1, K]

    def forward(train: bool) -> "torch.Tensor":
        # One matmul for every member of every model: [n, d] @ [d, M*K*H].
        hid = torch.relu((x @ w1.view(d, -1)).view(n, m, k, h) + b1)
        if train and cfg.dropout > 0:
            hid = torch.nn.functional.dropout(hid, cfg.dropout)
        return ((hid * w2).sum(dim=3) + b2).permute(1, 2, 0)  # logits [M, K, n]

    target = y[:, None, :].expand(m, k, n)
    for epoch in range(cfg.epochs):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            forward(True), target, reduction="none"
        )
        loss = ((loss * train_mask).sum(dim=2) / denom).sum()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(epoch + 1)

    with torch.no_grad():
        prob = torch.sigmoid(forward(False))  # [M, K, n]
        oof = prob.gather(1, folds[None, None, :].expand(m, 1, n))[:, 0, :].T.numpy()
        w1_models = w1.detach().permute(1, 2, 0, 3).numpy()  # [M, K, d, H]
    adapters = [
        Adapter(
            w1_models[j].astype(np.float32),
            b1.detach()[j].numpy().astype(np.float32),
            w2.detach()[j].numpy().astype(np.float32),
            b2.detach()[j].numpy().astype(np.float32),
        )
        for j in range(m)
    ]
    return adapters, oof.astype(np.float64)


def config_dict(cfg: AdapterConfig) -> dict:
    return asdict(cfg)
