"""An approximate nearest-neighbour index of the kNN memory, so that scoring stays flat as the
memory grows (an exact scan costs a matmul over every row: 9 ms per prompt at 100k rows).

    memory/index.faiss   an inverted file over the memory rows (faiss IVF, rows stored as 8 bits)

Why faiss, and an inverted file: faiss is the reference library of the field (Meta, MIT), its
wheel needs only numpy, and it imports beside onnxruntime in either order (usearch 2.26, the
first candidate, crashed the process when imported before onnxruntime; hnswlib has no wheel for
this Python). An inverted file clusters the rows around ``4 sqrt(N)`` centroids at training time
and searches the ``IPR_KNN_NPROBE`` clusters nearest a prompt. On a million rows, with the
adapters' k up to 100, it found more of the exact neighbours per millisecond than faiss's HNSW
(which also took three times as long to build) and than a PCA-reduced inverted file; rows stored
as 8 bits were scanned faster than float16 or float32 rows at the same recall (the sweep is in
docs/measurements.md, "Scoring as the memory grows").

The index only proposes candidates: their similarities are computed again, exactly, from the
memory itself, and the kNN rule (the k most similar, every row tied with the k-th counted in) is
applied to them, so a neighbour the index finds gets the exact weight, and the only error is a
neighbour it misses (its recall). The 8-bit rows steer the search, never the weights.

``train`` builds the index when the memory has ``INDEX_MIN_ROWS`` rows or more (below that the
exact scan is as fast and exact); ``IPR_KNN_NPROBE`` sets the clusters searched, and
``IPR_KNN_INDEX=off`` makes a scorer scan even when the artifact has one (``IndexSettings``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ipr_model.settings import IndexSettings

TIE = 1e-6  # cosine similarities this close to the k-th count as tied with it (adapters.py)
INDEX_FILE = "memory/index.faiss"
INDEX_MIN_ROWS = 20_000
TRAIN_PER_LIST = 40  # rows sampled per cluster to place the centroids
MARGIN = 16  # candidates asked beyond the largest k, for the rows tied with the k-th


class KnnIndex:
    """The inverted file of one memory [N, d] (unit-norm float32, kept by the caller)."""

    def __init__(self, index, memory: np.ndarray):
        if index.ntotal != len(memory) or index.d != memory.shape[1]:
            raise ValueError(f"the kNN index holds {index.ntotal} {index.d}-d rows, the memory "
                             f"{memory.shape[0]} {memory.shape[1]}-d rows: rebuild the index")
        self.index = index
        self.memory = memory

    @classmethod
    def build(cls, memory: np.ndarray, threads: int = 1) -> KnnIndex:
        """``threads=1`` (the default) builds the same index, byte for byte, every time. It
        searches ``IPR_KNN_NPROBE`` clusters."""
        import faiss

        faiss.omp_set_num_threads(threads)
        n, d = memory.shape
        lists = max(1, min(int(4 * np.sqrt(n)), n // TRAIN_PER_LIST))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, lists,
                                              faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, min(n, TRAIN_PER_LIST * lists), replace=False)
        index.train(memory[np.sort(sample)])
        index.add(memory)
        index.nprobe = IndexSettings().nprobe
        faiss.omp_set_num_threads(1)  # serving asks one prompt or a few at a time
        return cls(index, memory)

    def save(self, root: Path) -> None:
        import faiss

        path = Path(root) / INDEX_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, root: Path, memory: np.ndarray) -> KnnIndex | None:
        """The artifact's index over ``memory``, searching ``IPR_KNN_NPROBE`` clusters, or None
        when it has none or ``IPR_KNN_INDEX=off``."""
        import faiss

        settings = IndexSettings()
        path = Path(root) / INDEX_FILE
        if settings.index == "off" or not path.is_file():
            return None

        faiss.omp_set_num_threads(1)
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise ValueError(f"{path}: not a faiss index ({str(e).splitlines()[0]})") from None
        index.nprobe = settings.nprobe
        return cls(index, memory)

    def candidates(self, emb: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """For each row of ``emb``: ``count`` memory rows the index finds nearest, [n, count],
        and their exact cosine similarities (-inf where it found fewer)."""
        _, keys = self.index.search(np.ascontiguousarray(emb, dtype=np.float32), count)
        valid = keys >= 0
        keys = np.where(valid, keys, 0)
        sim = np.einsum("ncd,nd->nc", self.memory[keys], emb)
        return keys, np.where(valid, sim, -np.inf).astype(np.float32)

    def weights(self, emb: np.ndarray, ks: list[int]) -> list[SparseWeights]:
        """``adapters.knn_weights`` over the index's candidates: every k of ``ks`` (already
        capped at the rows available). The candidates are widened while the last one is still
        tied with the k-th, so a run of identical rows is counted whole."""
        count = min(len(self.memory), max(ks) + MARGIN)
        while True:
            keys, sim = self.candidates(emb, count)
            kth = -np.partition(-sim, sorted({k - 1 for k in ks}), axis=1)
            if count >= len(self.memory) or not (sim[:, -1] >= kth[:, max(ks) - 1] - TIE).any():
                break
            count = min(len(self.memory), count * 4)
        out = []
        for k in ks:
            w = (sim >= kth[:, k - 1 : k] - TIE).astype(np.float32)
            out.append(SparseWeights(keys, w / w.sum(axis=1, keepdims=True)))
        return out


class SparseWeights:
    """Weights [n, N] stored as each row's few nonzero columns: ``w @ labels`` as for a dense
    matrix (labels [N] or [N, m])."""

    def __init__(self, keys: np.ndarray, w: np.ndarray):
        self.keys, self.w = keys, w

    def __matmul__(self, labels: np.ndarray) -> np.ndarray:
        picked = np.asarray(labels)[self.keys]  # [n, c] or [n, c, m]
        return np.einsum("nc,nc...->n...", self.w, picked)
