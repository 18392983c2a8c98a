"""Quality adapters: one small estimator per candidate model on the frozen sentence embedding
(serving, numpy only; the training is in fitting.py).

An adapter is an ensemble of four diverse estimators of the model's answer quality, blended by
weights ``parts`` (mlp, ridge, kNN, joint; chosen once per artifact by the trainer from
``fitting.PART_WEIGHTS``, see train.py; the per-model calibration is then fitted on the blend):

- MLP: K small MLPs (embedding -> hidden -> 1, sigmoid), trained with binary cross-entropy on the
  recorded quality (soft targets, so graded quality in [0, 1] works as is). Member k trains on
  every fold but k; serving averages the members.
- linear: a ridge regression of the quality on the embedding (clipped to [0, 1]) with a strong
  fixed penalty (``AdapterConfig.ridge_alpha``, recorded in each card): the router compares many
  models' estimates and picks among the best, so noise in any one estimate is paid for twice
  (docs/estimator-choice.md).
- kNN: the mean recorded quality of the k nearest prompts (cosine) of a stored memory of train
  embeddings, every prompt tied with the k-th included (``knn_weights``). The memory is shared by
  every adapter trained together (``memory/`` at the artifact root); the adapter stores only its
  labels, aligned with the memory rows, or (``add-model`` with a dataset that does not cover the
  memory prompts) its own memory embeddings.
- joint: an item-response model whose prompt side is learned from every model's outcomes at once
  (joint.py; ``joint/`` at the artifact root); the adapter stores its ability vectors.

The first three parts are per model; the joint part's prompt side is shared, and a model added
later fits only its own ability against it, so ``ipr add-model`` trains just the new model's
adapter and leaves every other file untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ipr_model.serving.joint import PromptSide, joint_quality
from ipr_model.serving.knn_index import TIE, KnnIndex

EQUAL_PARTS = (1 / 3, 1 / 3, 1 / 3, 0.0)  # mlp, ridge, kNN, joint: files before blends
_CHUNK = 1024


def knn_weights(
    memory: np.ndarray, emb: np.ndarray, ks: list[int], exclude: np.ndarray | None = None,
    index: KnnIndex | None = None,
) -> list:
    """For each k of ``ks``, weights [n, N] that average each row of ``emb``'s k most
    cosine-similar ``memory`` rows (both unit-norm), with every row tied with the k-th
    (within ``TIE``) counted in: prompts whose encoder windows are identical (a long shared
    template, truncated) are one neighbourhood, not an arbitrary k of them. k is capped at the
    rows available; ``exclude[i] >= 0`` drops that memory row for query i (leave-one-out).
    With ``index`` (the memory's, knn_index.py), the rows are looked for among the index's
    candidates and the weights are sparse (``w @ labels`` all the same)."""
    if index is not None and exclude is None:
        return index.weights(np.asarray(emb, dtype=np.float32),
                             [max(1, min(int(k), len(memory))) for k in ks])
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

    def mean(self, memory: np.ndarray, labels: np.ndarray, k: int,
             index: KnnIndex | None = None) -> np.ndarray:
        """[n]: the mean of ``labels`` [N] over each embedding's k nearest memory rows."""
        key = (id(memory), int(k))
        hit = self._w.get(key)
        if hit is None or hit[0] is not memory:
            hit = self._w[key] = (memory, knn_weights(memory, self.emb, [k], index=index)[0])
        return hit[1] @ labels


@dataclass
class Adapter:
    """One model's ensemble.

    MLP: w1 [K, d, H], b1 [K, H], w2 [K, H], b2 [K]; ridge: lin_w [d], lin_b []; kNN: knn_k [],
    knn_y [N] (labels of the memory rows) and ``memory`` [N, d] (unit-norm float32; the shared
    memory unless ``own_memory``, in which case it is saved in the adapter file as float16);
    joint: ``ability`` [K, r] and ``intercept`` [K] against ``prompt`` (the artifact's prompt
    side; all three None in files written before the joint part); ``parts`` [4]: the blend
    weights of mlp, ridge, kNN and joint (files before blends: equal; before the joint part: 3).
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
    ability: np.ndarray | None = None
    intercept: np.ndarray | None = None
    prompt: PromptSide | None = None
    index: KnnIndex | None = None  # the shared memory's ANN index, when the artifact has one

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
        return (neighbours or Neighbours(emb)).mean(self.memory, self.knn_y, int(self.knn_k),
                                                    self.index)

    def joint(self, emb: np.ndarray) -> np.ndarray:
        if self.prompt is None or self.ability is None or self.intercept is None:
            return np.zeros(len(emb))
        return joint_quality(self.prompt.theta(emb), self.ability[:, :, None],
                             self.intercept[:, None])[:, 0]

    def raw(self, emb: np.ndarray, neighbours: Neighbours | None = None) -> np.ndarray:
        """The blend of the parts' predicted quality, before calibration: [n]."""
        emb = np.asarray(emb, dtype=np.float32)
        w = self.parts
        out = w[0] * self.mlp(emb) + w[1] * self.linear(emb) + w[2] * self.knn(emb, neighbours)
        return out + w[3] * self.joint(emb) if w[3] else out

    def save(self, path: Path) -> None:
        # Written through a file object so np.savez adds no suffix; arrays are stored uncompressed
        # so the bytes (and the sha256) depend only on the weights.
        arrays = {k: getattr(self, k) for k in _ARRAYS + ("parts",)}
        if self.ability is not None:
            arrays.update(ability=self.ability, intercept=self.intercept)
        if self.own_memory:
            arrays["memory"] = self.memory.astype(np.float16)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path, shared_memory: Callable[[], np.ndarray] | None = None,
             prompt: Callable[[], PromptSide | None] | None = None,
             index: Callable[[], KnnIndex | None] | None = None) -> Adapter:
        """``shared_memory`` gives the artifact's memory when the file has none of its own,
        ``prompt`` the artifact's prompt side when the file has a joint ability, ``index`` the
        shared memory's ANN index (None: scan it)."""
        with np.load(path, allow_pickle=False) as z:
            names = [k for k in (*_ARRAYS, "parts", "ability", "intercept") if k in z.files]
            arrays = {k: z[k].astype(np.float32) for k in names}
            own = "memory" in z.files
            memory = unit(z["memory"]) if own else None
        if memory is None:
            if shared_memory is None:
                raise ValueError(f"{path}: the adapter needs the artifact's shared memory")
            memory = shared_memory()
        if "parts" in arrays and arrays["parts"].shape == (3,):  # written before the joint part
            arrays["parts"] = np.append(arrays["parts"], np.float32(0.0))
        side = prompt() if prompt is not None and "ability" in arrays else None
        if "ability" in arrays and side is None:
            raise ValueError(f"{path}: the adapter's joint part needs the artifact's prompt side")
        a = cls(**arrays, memory=memory, own_memory=own, prompt=side,
                index=index() if index is not None and not own else None)
        k, d, h = a.w1.shape
        if (
            a.b1.shape != (k, h) or a.w2.shape != (k, h) or a.b2.shape != (k,)
            or a.lin_w.shape != (d,) or a.lin_b.shape != () or a.knn_k.shape != ()
            or a.memory.shape != (len(a.knn_y), d) or not 1 <= a.knn_k <= len(a.knn_y)
            or a.parts.shape != (4,) or not _joint_fits(a)
        ):
            raise ValueError(f"{path}: inconsistent adapter shapes")
        return a


_ARRAYS = ("w1", "b1", "w2", "b2", "lin_w", "lin_b", "knn_k", "knn_y")


def _joint_fits(a: Adapter) -> bool:
    if a.ability is None:
        return a.intercept is None and not a.parts[3]
    k, d, r = a.prompt.shape
    return a.ability.shape == (k, r) and a.intercept.shape == (k,) and d == a.dim


class AdapterStack:
    """Several adapters evaluated together: every MLP's first layer and every ridge head in one
    matmul each, one kNN look-up per distinct memory for all its k (then one matmul per k for
    every adapter with that k), the joint parts in one einsum (the same numbers as each
    ``Adapter.raw``). Adapters with different MLP shapes are evaluated one by one."""

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
            self.parts = np.stack([a.parts for a in self.adapters], axis=1)  # [4, M]
        self.joint = _stacked_joint(self.adapters) if self.fused else None
        self.knn_groups = _knn_groups(self.adapters)

    def raw(self, emb: np.ndarray) -> np.ndarray:
        """[n, M]: each adapter's ``raw`` prediction (in chunks: the kNN weights are [n, N])."""
        emb = np.asarray(emb, dtype=np.float32)
        if len(emb) > _CHUNK:
            return np.concatenate(
                [self.raw(emb[s : s + _CHUNK]) for s in range(0, len(emb), _CHUNK)]
            )
        if not self.fused:
            nb = Neighbours(emb)
            return np.stack([a.raw(emb, nb) for a in self.adapters], axis=1)
        lin = np.clip(emb @ self.lin_w + self.lin_b, 0.0, 1.0)
        out = self.parts[1] * lin + self.parts[2] * self.knn(emb)
        if self.parts[0].any():  # (a blend may leave the MLPs out: then they cost nothing)
            n, m = len(emb), len(self.adapters)
            hid = np.maximum(emb @ self.w1 + self.b1, 0.0) * self.w2
            z = hid.reshape(n, m, self.k, self.h).sum(axis=3) + self.b2
            out = out + self.parts[0] * (1.0 / (1.0 + np.exp(-z))).mean(axis=2)
        if self.joint is None:
            return out
        prompt, ability, intercept = self.joint
        return out + self.parts[3] * joint_quality(prompt.theta(emb), ability, intercept)

    def knn(self, emb: np.ndarray) -> np.ndarray:
        """[n, M]: every adapter's kNN part; one similarity matmul and partition per memory."""
        out = np.empty((len(emb), len(self.adapters)), dtype=np.float32)
        for memory, index, ks, by_k in self.knn_groups:
            for w, (cols, labels) in zip(knn_weights(memory, emb, ks, index=index), by_k,
                                         strict=True):
                out[:, cols] = w @ labels
        return out


def _knn_groups(adapters: list[Adapter]) -> list[tuple]:
    """Per distinct memory: the memory, its index, its adapters' distinct k, and for each k the
    adapters' columns and their labels stacked [N, m_k]."""
    by_memory: dict[int, tuple[np.ndarray, KnnIndex | None, dict[int, list[int]]]] = {}
    for j, a in enumerate(adapters):
        group = by_memory.setdefault(id(a.memory), (a.memory, a.index, {}))
        group[2].setdefault(int(a.knn_k), []).append(j)
    return [(memory, index, sorted(by_k),
             [(np.array(by_k[k]), np.stack([adapters[j].knn_y for j in by_k[k]], axis=1))
              for k in sorted(by_k)])
            for memory, index, by_k in by_memory.values()]


def _stacked_joint(adapters: list[Adapter]) -> tuple[PromptSide, np.ndarray, np.ndarray] | None:
    """The prompt side and every adapter's ability [K, r, M] and intercept [K, M] (zero for an
    adapter whose blend leaves the joint part out), or None when no adapter uses it."""
    used = [a for a in adapters if a.parts[3]]
    if not used:
        return None
    prompt = used[0].prompt
    if any(a.prompt is not prompt for a in used):
        raise ValueError("adapters blending the joint part must share one prompt side")
    k, _, r = prompt.shape
    ability = np.stack([a.ability if a.parts[3] else np.zeros((k, r), np.float32)
                        for a in adapters], axis=2)
    intercept = np.stack([a.intercept if a.parts[3] else np.zeros(k, np.float32)
                          for a in adapters], axis=1)
    return prompt, ability, intercept


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

