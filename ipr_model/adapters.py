"""Quality adapters: one small estimator per candidate model on the frozen sentence embedding.

An adapter is an ensemble of three diverse estimators of the model's answer quality, blended by
weights ``parts`` (mlp, ridge, kNN; chosen once per artifact by the trainer from ``PART_WEIGHTS``,
see train.py; the per-model calibration is then fitted on the blend):

- MLP: K small MLPs (embedding -> hidden -> 1, sigmoid), trained jointly in torch with binary
  cross-entropy on the recorded quality (soft targets, so graded quality in [0, 1] works as is).
  Member k trains on every fold but k; serving averages the members.
- linear: a ridge regression of the quality on the embedding (clipped to [0, 1]) with a strong
  fixed penalty (``AdapterConfig.ridge_alpha``, recorded in each card), ten to thirty times what
  leave-one-out squared error picks (3 to 10 on the shared datasets): the router compares many
  models' estimates and picks among the best, so noise in any one estimate is paid for twice; the
  heavier penalty drops the embedding directions a model's quality is poorly estimated along
  (docs/estimator-choice.md).
- kNN: the mean recorded quality of the k nearest prompts (cosine) of a stored memory of train
  embeddings, every prompt tied with the k-th included (``knn_weights``); k is chosen per model
  by leave-one-out error over ``KNN_GRID``. The memory is shared by every adapter trained
  together (``memory/`` at the artifact root, see ``Memory``); the adapter stores only its
  labels, aligned with the memory rows, or (``add-model`` with a dataset that does not cover the
  memory prompts) its own memory embeddings.

Every train prompt gets an out-of-sample prediction from each part (the MLP member that did not
see its fold, the ridge and kNN leave-one-out estimates), so the blend weights and the
calibration are chosen on data the ensemble did not train on. Serving is numpy only
(``Adapter.raw``; torch is imported by ``train_adapters`` alone).

Adapters are independent: training several at once is the same computation as training each
alone (the MLP losses add up and Adam updates each parameter on its own; ridge and kNN are per
column), so ``ipr add-model`` trains just the new model's adapter and leaves every other file
untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

KNN_GRID = (5, 10, 20, 50, 100)
# Blends of (mlp, ridge, kNN) the trainer chooses from, the equal blend first (it wins ties).
PART_WEIGHTS = tuple(
    tuple(float(x) / sum(w) for x in w)
    for w in ((1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, 1), (0, 1, 1), (0, 1, 0), (0, 0, 1))
)
EQUAL_PARTS = PART_WEIGHTS[0]
_CHUNK = 1024
TIE = 1e-6  # cosine similarities this close to the k-th count as tied with it


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


DEFAULT_CONFIG = AdapterConfig()  # the default ``cfg`` of the trainers (frozen: safe to share)


def knn_weights(
    memory: np.ndarray, emb: np.ndarray, ks: list[int], exclude: np.ndarray | None = None
) -> list[np.ndarray]:
    """For each k of ``ks``, weights [n, N] that average each row of ``emb``'s k most
    cosine-similar ``memory`` rows (both unit-norm), with every row tied with the k-th
    (within ``TIE``) counted in: prompts whose encoder windows are identical (a long shared
    template, truncated) are one neighbourhood, not an arbitrary k of them. k is capped at the
    rows available; ``exclude[i] >= 0`` drops that memory row for query i (leave-one-out)."""
    sim = np.asarray(emb, dtype=np.float32) @ memory.T
    n_mem = len(memory)
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        sim[rows, exclude[rows]] = -np.inf
        n_mem -= 1
    if n_mem < 1:
        raise ValueError("the kNN memory needs at least one row besides the query's own")
    ks = [max(1, min(int(k), n_mem)) for k in ks]
    kth = -np.partition(-sim, sorted({k - 1 for k in ks}), axis=1)
    out = []
    for k in ks:
        w = (sim >= kth[:, k - 1 : k] - TIE).astype(np.float32)
        out.append(w / w.sum(axis=1, keepdims=True))
    return out


class Neighbours:
    """The kNN weights of a batch of embeddings, computed once per (memory, k) and shared by
    every adapter that uses that memory (a 28-model router does one look-up per k, not 28)."""

    def __init__(self, emb: np.ndarray):
        self.emb = np.asarray(emb, dtype=np.float32)
        self._w: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def mean(self, memory: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
        """[n]: the mean of ``labels`` [N] over each embedding's k nearest memory rows."""
        key = (id(memory), int(k))
        hit = self._w.get(key)
        if hit is None or hit[0] is not memory:
            hit = self._w[key] = (memory, knn_weights(memory, self.emb, [k])[0])
        return hit[1] @ labels


@dataclass
class Adapter:
    """One model's ensemble.

    MLP: w1 [K, d, H], b1 [K, H], w2 [K, H], b2 [K]; ridge: lin_w [d], lin_b []; kNN: knn_k [],
    knn_y [N] (labels of the memory rows) and ``memory`` [N, d] (unit-norm float32; the shared
    memory unless ``own_memory``, in which case it is saved in the adapter file as float16);
    ``parts`` [3]: the blend weights of mlp, ridge and kNN (equal in files written before them).
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    lin_w: np.ndarray
    lin_b: np.ndarray
    knn_k: np.ndarray
    knn_y: np.ndarray
    memory: np.ndarray
    own_memory: bool = False
    parts: np.ndarray = field(default_factory=lambda: np.array(EQUAL_PARTS, dtype=np.float32))

    @property
    def dim(self) -> int:
        return int(self.w1.shape[1])

    def __post_init__(self):
        k, d, h = self.w1.shape  # every member's first layer as one [d, K*H] matmul
        self._w1_flat = np.ascontiguousarray(self.w1.transpose(1, 0, 2).reshape(d, k * h))

    def mlp(self, emb: np.ndarray) -> np.ndarray:
        k, _, h = self.w1.shape
        hid = np.maximum((emb @ self._w1_flat).reshape(len(emb), k, h) + self.b1, 0.0)
        z = (hid * self.w2).sum(axis=2) + self.b2  # [n, K]
        return (1.0 / (1.0 + np.exp(-z))).mean(axis=1)

    def linear(self, emb: np.ndarray) -> np.ndarray:
        return np.clip(emb @ self.lin_w + self.lin_b, 0.0, 1.0)

    def knn(self, emb: np.ndarray, neighbours: Neighbours | None = None) -> np.ndarray:
        return (neighbours or Neighbours(emb)).mean(self.memory, self.knn_y, int(self.knn_k))

    def raw(self, emb: np.ndarray, neighbours: Neighbours | None = None) -> np.ndarray:
        """The blend of the three parts' predicted quality, before calibration: [n]."""
        emb = np.asarray(emb, dtype=np.float32)
        w = self.parts
        return w[0] * self.mlp(emb) + w[1] * self.linear(emb) + w[2] * self.knn(emb, neighbours)

    def save(self, path: Path) -> None:
        # Written through a file object so np.savez adds no suffix; arrays are stored uncompressed
        # so the bytes (and the sha256) depend only on the weights.
        arrays = {k: getattr(self, k) for k in _ARRAYS + ("parts",)}
        if self.own_memory:
            arrays["memory"] = self.memory.astype(np.float16)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path, shared_memory: Callable[[], np.ndarray] | None = None) -> Adapter:
        """``shared_memory`` gives the artifact's memory when the file has none of its own."""
        with np.load(path, allow_pickle=False) as z:
            names = _ARRAYS + (("parts",) if "parts" in z.files else ())
            arrays = {k: z[k].astype(np.float32) for k in names}
            own = "memory" in z.files
            memory = unit(z["memory"]) if own else None
        if memory is None:
            if shared_memory is None:
                raise ValueError(f"{path}: the adapter needs the artifact's shared memory")
            memory = shared_memory()
        a = cls(**arrays, memory=memory, own_memory=own)
        k, d, h = a.w1.shape
        if (
            a.b1.shape != (k, h) or a.w2.shape != (k, h) or a.b2.shape != (k,)
            or a.lin_w.shape != (d,) or a.lin_b.shape != () or a.knn_k.shape != ()
            or a.memory.shape != (len(a.knn_y), d) or not 1 <= a.knn_k <= len(a.knn_y)
            or a.parts.shape != (3,)
        ):
            raise ValueError(f"{path}: inconsistent adapter shapes")
        return a


_ARRAYS = ("w1", "b1", "w2", "b2", "lin_w", "lin_b", "knn_k", "knn_y")


class AdapterStack:
    """Several adapters evaluated together: every MLP's first layer and every ridge head in one
    matmul each, and one kNN look-up per distinct memory (the single-prompt fast path; the same
    numbers as each ``Adapter.raw``). Adapters with different MLP shapes are evaluated one by
    one."""

    def __init__(self, adapters: list[Adapter]):
        self.adapters = list(adapters)
        shapes = {a.w1.shape[::2] for a in self.adapters}
        self.fused = len(shapes) == 1
        if self.fused:
            ((self.k, self.h),) = shapes
            self.w1 = np.concatenate([a._w1_flat for a in self.adapters], axis=1)
            self.b1 = np.concatenate([a.b1.ravel() for a in self.adapters])
            self.w2 = np.concatenate([a.w2.ravel() for a in self.adapters])
            self.b2 = np.stack([a.b2 for a in self.adapters])  # [M, K]
            self.lin_w = np.stack([a.lin_w for a in self.adapters], axis=1)
            self.lin_b = np.stack([a.lin_b for a in self.adapters])
            self.parts = np.stack([a.parts for a in self.adapters], axis=1)  # [3, M]

    def raw(self, emb: np.ndarray) -> np.ndarray:
        """[n, M]: each adapter's ``raw`` prediction (in chunks: the kNN weights are [n, N])."""
        emb = np.asarray(emb, dtype=np.float32)
        if len(emb) > _CHUNK:
            return np.concatenate(
                [self.raw(emb[s : s + _CHUNK]) for s in range(0, len(emb), _CHUNK)]
            )
        nb = Neighbours(emb)
        if not self.fused:
            return np.stack([a.raw(emb, nb) for a in self.adapters], axis=1)
        n, m = len(emb), len(self.adapters)
        hid = np.maximum(emb @ self.w1 + self.b1, 0.0) * self.w2
        z = hid.reshape(n, m, self.k, self.h).sum(axis=3) + self.b2
        mlp = (1.0 / (1.0 + np.exp(-z))).mean(axis=2)
        lin = np.clip(emb @ self.lin_w + self.lin_b, 0.0, 1.0)
        knn = np.stack([a.knn(emb, nb) for a in self.adapters], axis=1)
        return self.parts[0] * mlp + self.parts[1] * lin + self.parts[2] * knn


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------- training (numpy + torch)


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
) -> tuple[list[Adapter], np.ndarray]:
    """Train one adapter per column of ``targets`` [n, M] on ``emb`` [n, d].

    The kNN part looks up ``memory`` [N, d] (unit-norm) with labels ``memory_labels`` [N, M];
    ``memory_row`` [n] is each train prompt's row in the memory (-1: not in it), left out of its
    own estimate. Returns the adapters (equal blend; the trainer sets ``parts``) and every part's
    out-of-sample predictions [n, M, 3] (mlp, ridge, kNN), to choose the blend and calibrate it.
    """
    emb = np.asarray(emb, dtype=np.float32)
    mlps, oof_mlp = train_mlps(emb, targets, cfg, progress)
    lin_w, lin_b, oof_lin = fit_ridge(emb, targets, cfg.ridge_alpha)
    ks, oof_knn = fit_knn(memory, memory_labels, emb, targets, memory_row)
    adapters = [
        Adapter(
            *mlps[j],
            lin_w=lin_w[:, j].astype(np.float32),
            lin_b=np.float32(lin_b[j]).reshape(()),
            knn_k=np.float32(ks[j]).reshape(()),
            knn_y=memory_labels[:, j].astype(np.float32),
            memory=memory,
            own_memory=own_memory,
        )
        for j in range(targets.shape[1])
    ]
    return adapters, np.stack([oof_mlp, oof_lin, oof_knn], axis=2)


def config_dict(cfg: AdapterConfig) -> dict:
    return asdict(cfg)
