"""The kNN memory's ANN index against the exact scan (``python -m benchmarks knn-index``; in
``make bench``, build/knn-index.json).

- **Real rows.** The index over the artifact's own memory (real train prompts), queried with the
  dataset's test prompts: the share of each adapter k's exact neighbours it finds (recall), how far
  the kNN part and the routed model move.
- **Growth.** Memories of 2k to 1M rows resampled from the real memory with jitter (synthetic,
  fine for speed; jitter 0.05 per dimension, so a row is about as far from its source as from
  the source's neighbours: a harder neighbourhood than real prompts'), each row with its source's
  labels, queried with the real test prompts: the time to build the index, its size, and the
  scorer's per-prompt time (encoder excluded) exact and indexed, one prompt at a time and in
  batches of 32; indexed, also its recall and how far the predicted quality and the routed model
  move, with the clusters searched (``IPR_KNN_NPROBE``) swept at the largest memory.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ipr_model.serving.adapters import knn_weights, unit

ROWS = (2_000, 20_000, 100_000, 1_000_000)
NPROBES = (8, 16, 32, 64)  # swept at the largest memory
JITTER = 0.05


def recall(memory: np.ndarray, emb: np.ndarray, ks: list[int], index) -> dict[int, float]:
    """For each k: the share of the exact neighbours (ties counted in) the index finds."""
    out = {}
    for k, exact, approx in zip(ks, knn_weights(memory, emb, ks),
                                knn_weights(memory, emb, ks, index=index), strict=True):
        found = [len(set(np.flatnonzero(e)) & set(keys[w > 0])) / np.count_nonzero(e)
                 for e, keys, w in zip(exact, approx.keys, approx.w, strict=True)]
        out[k] = round(float(np.mean(found)), 4)
    return out


def agreement(exact, indexed, emb: np.ndarray, texts: list[str]) -> dict:
    """How far the index moves the predicted quality, and the share of prompts routed to the
    same model at τ = 0, 0.1 and 0.2."""
    from ipr_model.serving.decision import decide

    a, b = exact.score_embeddings(emb, texts), indexed.score_embeddings(emb, texts)
    same = [np.mean([x.model_id == y.model_id for x, y in zip(
        decide(exact, a, [t] * len(emb)), decide(indexed, b, [t] * len(emb)), strict=True)])
        for t in (0.0, 0.1, 0.2)]
    diff = np.abs(a.quality - b.quality)
    return {"quality_abs_diff_mean": round(float(diff.mean()), 6),
            "quality_abs_diff_max": round(float(diff.max()), 6),
            "same_model_share_tau_0_0.1_0.2": [round(float(s), 4) for s in same]}


def real_rows(scorer, emb: np.ndarray, texts: list[str]) -> dict:
    """The index over the artifact's memory, queried with the test prompts."""
    from ipr_model.serving.knn_index import KnnIndex

    memory = scorer.cards[0].adapter.memory
    index = KnnIndex.build(memory)
    ks = sorted({int(c.adapter.knn_k) for c in scorer.cards})
    exact, indexed = _with_memory(scorer, memory, None), _with_memory(scorer, memory, index)
    return {"rows": len(memory), "queries": len(emb), "recall": recall(memory, emb, ks, index),
            **agreement(exact, indexed, emb, texts)}


def growth(scorer, emb: np.ndarray, texts: list[str], rows=ROWS, reps: int = 100) -> list[dict]:
    from benchmarks.scaling import _time_scoring
    from ipr_model.serving.knn_index import INDEX_FILE, KnnIndex
    from ipr_model.settings import IndexSettings

    base = scorer.cards[0].adapter.memory
    rng = np.random.default_rng(0)
    ks = sorted({int(c.adapter.knn_k) for c in scorer.cards})
    out = []
    for n in rows:
        source = rng.integers(0, len(base), n)
        memory = unit(base[source] + rng.normal(0, JITTER, (n, base.shape[1])).astype(np.float32))
        t0 = time.perf_counter()
        index = KnnIndex.build(memory, threads=os.cpu_count() or 1)
        built = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as d:
            index.save(Path(d))
            size = (Path(d) / INDEX_FILE).stat().st_size
        exact = _with_memory(scorer, memory, None, source)
        fast = _with_memory(scorer, memory, index, source)
        row = {"rows": n, "build_s": round(built, 1), "index_mb": round(size / 1e6, 1),
               "exact": _time_scoring(exact, emb[:64], texts[:64], max(32, reps * 2000 // n)),
               "nprobe": IndexSettings().nprobe}
        for nprobe in sorted({row["nprobe"], *NPROBES}) if n == max(rows) else [row["nprobe"]]:
            index.index.nprobe = nprobe
            row.setdefault("indexed", []).append({
                "nprobe": nprobe, "recall": recall(memory, emb[:200], ks, index),
                **agreement(exact, fast, emb[:200], texts[:200]),
                **_time_scoring(fast, emb[:64], texts[:64], reps)})
        out.append(row)
        del memory, index, exact, fast
    return out


def _with_memory(scorer, memory: np.ndarray, index, source: np.ndarray | None = None):
    """The scorer with every card's kNN part on ``memory`` (and ``index``; None: scanned), each
    row labelled as its ``source`` row of the artifact's memory."""
    from ipr_model.serving.scorer import Scorer

    cards = [replace(c, adapter=replace(
        c.adapter, memory=memory, index=index,
        knn_y=c.adapter.knn_y if source is None else c.adapter.knn_y[source]))
        for c in scorer.cards]
    return Scorer(scorer.manifest, scorer.encoder, cards)


def run(artifacts: Path, dataset: Path, rows=ROWS) -> dict:
    from ipr_model.serving.scorer import Scorer
    from ipr_model.training.datasets import load_dataset

    data = load_dataset(dataset)
    texts = list((data.split("test") if data.has_split("test") else data).prompts)
    scorer = Scorer.load(artifacts)
    emb = scorer.encoder.encode(texts)
    return {"real": real_rows(scorer, emb, texts), "growth": growth(scorer, emb, texts, rows),
            "machine": {"cpus": os.cpu_count()}}
