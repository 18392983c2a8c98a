"""Training the adapters (adapters.py): every part's weights and out-of-sample predictions, from
which the trainer (train.py) chooses the blend and fits the calibrations. Needs torch.

Every train prompt gets an out-of-sample prediction from each part (the MLP and joint members that
did not see its fold, the ridge and kNN leave-one-out estimates), so the blend weights and the
calibration are chosen on data the ensemble did not train on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ipr_model.serving.adapters import _CHUNK, Adapter, knn_weights
from ipr_model.serving.joint import PromptSide, fit_joint

KNN_GRID = (5, 10, 20, 50, 100)
# Blends of (mlp, ridge, kNN) the trainer chooses from, the equal blend first (it wins ties) ...
_PER_MODEL = ((1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, 1), (0, 1, 1), (0, 1, 0), (0, 0, 1))
# ... each with the joint part at these shares of the blend, and the joint part alone.
JOINT_SHARES = (0.0, 0.25, 0.5, 0.75)
PART_WEIGHTS = tuple(
    tuple(float(x) * (1.0 - s) / sum(w) for x in w) + (s,) for s in JOINT_SHARES for w in _PER_MODEL
) + ((0.0, 0.0, 0.0, 1.0),)


@dataclass(frozen=True)
class AdapterConfig:
    hidden: int = 16
    members: int = 5
    epochs: int = 80
    lr: float = 5e-3
    weight_decay: float = 1e-2
    dropout: float = 0.1
    seed: int = 0
    ridge_alpha: float = 100.0
    joint_rank: int = 8
    joint_epochs: int = 300
    joint_lr: float = 1e-2


DEFAULT_CONFIG = AdapterConfig()  # the default ``cfg`` of the trainers (frozen: safe to share)




def fold_ids(n: int, members: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % members)


def fit_ridge(
    emb: np.ndarray, targets: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column ridge with an unpenalised intercept and penalty ``alpha``. Returns weights
    [d, M], intercepts [M] and the exact leave-one-out predictions [n, M] (closed form, one SVD;
    clipped to [0, 1] like the served part)."""
    x = np.asarray(emb, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    mu, ym = x.mean(axis=0), y.mean(axis=0)
    u, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    uty = u.T @ (y - ym)
    shrink = s**2 / (s**2 + alpha)
    fit = u @ (shrink[:, None] * uty) + ym
    hat = (u**2) @ shrink + 1.0 / len(x)  # leverage of each row
    loo = y - (y - fit) / (1.0 - hat)[:, None]
    w = vt.T @ ((s / (s**2 + alpha))[:, None] * uty)
    return w, ym - mu @ w, np.clip(loo, 0.0, 1.0)


def fit_knn(
    memory: np.ndarray, labels: np.ndarray, queries: np.ndarray, targets: np.ndarray,
    exclude: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """k per column of ``labels`` [N, M] (of the memory rows) by the squared error of the kNN
    estimate of ``targets`` [n, M] (the labels of ``queries`` [n, d]), each query leaving out its
    own memory row ``exclude`` [n] (-1: not in the memory). Ties go to the smaller k.
    Returns k [M] and the out-of-sample predictions [n, M]."""
    grid = sorted({max(1, min(k, len(memory) - 1)) for k in KNN_GRID})
    preds = np.zeros((len(grid), *targets.shape))
    for s in range(0, len(queries), _CHUNK):
        ws = knn_weights(memory, queries[s : s + _CHUNK], grid, exclude[s : s + _CHUNK])
        for p, w in zip(preds, ws, strict=True):
            p[s : s + _CHUNK] = w @ labels
    err = ((preds - targets) ** 2).mean(axis=1)  # [len(grid), M]
    best = err.argmin(axis=0)  # the first (smallest k) on ties
    return np.array(grid)[best], preds[best, :, np.arange(targets.shape[1])].T


def train_mlps(
    emb: np.ndarray,
    targets: np.ndarray,
    cfg: AdapterConfig = AdapterConfig(),
    progress: Callable[[int], None] | None = None,
) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    """K-fold MLP ensembles, one per column of ``targets`` [n, M]: the weights (w1, b1, w2, b2) of
    each and the out-of-fold predictions [n, M]."""
    import torch

    n, d = emb.shape
    m = targets.shape[1]
    k, h = cfg.members, cfg.hidden
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(targets.T, dtype=np.float32))  # [M, n]
    folds = torch.from_numpy(fold_ids(n, k, cfg.seed))
    train_mask = (folds[None, :] != torch.arange(k)[:, None]).float()  # [K, n]

    w1 = torch.randn(d, m, k, h) * (2.0 / d) ** 0.5
    b1 = torch.zeros(m, k, h)
    w2 = torch.randn(m, k, h) * (1.0 / h) ** 0.5
    prior = y.mean(dim=1).clamp(0.02, 0.98)
    b2 = torch.log(prior / (1 - prior))[:, None].repeat(1, k)
    params = [p.requires_grad_() for p in (w1, b1, w2, b2)]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    denom = train_mask.sum(dim=1)[None, :]  # [1, K]

    def forward(train: bool) -> torch.Tensor:
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
        b1d, w2d, b2d = (p.detach().numpy() for p in (b1, w2, b2))
    weights = [
        tuple(np.array(a, dtype=np.float32) for a in (w1_models[j], b1d[j], w2d[j], b2d[j]))
        for j in range(m)
    ]
    return weights, oof.astype(np.float64)


def train_adapters(
    emb: np.ndarray,
    targets: np.ndarray,
    memory: np.ndarray,
    memory_labels: np.ndarray,
    memory_row: np.ndarray,
    cfg: AdapterConfig = AdapterConfig(),
    own_memory: bool = False,
    progress: Callable[[int], None] | None = None,
    prompt: PromptSide | None = None,
) -> tuple[list[Adapter], np.ndarray]:
    """Train one adapter per column of ``targets`` [n, M] on ``emb`` [n, d].

    The kNN part looks up ``memory`` [N, d] (unit-norm) with labels ``memory_labels`` [N, M];
    ``memory_row`` [n] is each train prompt's row in the memory (-1: not in it), left out of its
    own estimate. The joint part learns its prompt side from every column, or (``prompt``) fits
    only the abilities against a given one. Returns the adapters (equal blend; the trainer sets
    ``parts``) and every part's out-of-sample predictions [n, M, 4] (mlp, ridge, kNN, joint), to
    choose the blend and calibrate it.
    """
    emb = np.asarray(emb, dtype=np.float32)
    mlps, oof_mlp = train_mlps(emb, targets, cfg, progress)
    lin_w, lin_b, oof_lin = fit_ridge(emb, targets, cfg.ridge_alpha)
    ks, oof_knn = fit_knn(memory, memory_labels, emb, targets, memory_row)
    prompt, ability, intercept, oof_joint = fit_joint(
        emb, targets, fold_ids(len(emb), cfg.members, cfg.seed), cfg.joint_rank,
        cfg.joint_epochs, cfg.joint_lr, cfg.weight_decay, cfg.seed, prompt)
    adapters = [
        Adapter(
            *mlps[j],
            lin_w=lin_w[:, j].astype(np.float32),
            lin_b=np.float32(lin_b[j]).reshape(()),
            knn_k=np.float32(ks[j]).reshape(()),
            knn_y=memory_labels[:, j].astype(np.float32),
            memory=memory,
            own_memory=own_memory,
            ability=ability[j],
            intercept=intercept[j],
            prompt=prompt,
        )
        for j in range(targets.shape[1])
    ]
    return adapters, np.stack([oof_mlp, oof_lin, oof_knn, oof_joint], axis=2)


def config_dict(cfg: AdapterConfig) -> dict:
    return asdict(cfg)
