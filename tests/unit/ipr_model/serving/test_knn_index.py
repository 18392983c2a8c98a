"""The kNN memory's ANN index: the same neighbours as the exact scan (exact weights on what it
finds), runs of identical rows counted whole, stored and read back with the artifact, and a
router told to scan ignores it."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from ipr_model.serving.adapters import Adapter, AdapterStack, knn_weights, unit
from ipr_model.serving.knn_index import INDEX_FILE, MARGIN, KnnIndex


def _clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    """Rows around 60 centres, like prompts of a few dozen tasks."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((60, d)))
    return unit(centres[rng.integers(0, 60, n)] + 0.1 * rng.standard_normal((n, d)))


def test_the_index_finds_the_exact_neighbours_and_weighs_them_exactly():
    mem, query = _clustered(4000), _clustered(200, seed=1)
    labels = np.random.default_rng(2).random((4000, 3))
    index = KnnIndex.build(mem)
    for exact, approx in zip(knn_weights(mem, query, [1, 5, 20]),
                             knn_weights(mem, query, [1, 5, 20], index=index), strict=True):
        want = [set(np.flatnonzero(row)) for row in exact]
        got = [set(keys[w > 0]) for keys, w in zip(approx.keys, approx.w, strict=True)]
        recall = np.mean([len(a & b) / len(a) for a, b in zip(want, got, strict=True)])
        assert recall >= 0.95, f"recall {recall:.3f}"
        same = np.isclose(exact @ labels, approx @ labels, atol=1e-6).all(axis=1)
        np.testing.assert_array_equal(same, [a == b for a, b in zip(want, got, strict=True)])
    # k above the rows available is capped as in the exact scan.
    (w,) = knn_weights(mem[:10], query, [50], index=KnnIndex.build(mem[:10]))
    np.testing.assert_allclose(w @ labels[:10], np.repeat(labels[:10].mean(0)[None], 200, 0),
                               rtol=1e-5)


def test_a_run_of_identical_rows_longer_than_the_candidates_is_counted_whole():
    mem = _clustered(500)
    run = 3 * MARGIN  # more identical rows than the first search asks for
    dup = np.concatenate([np.repeat(mem[:1], run, axis=0), mem[1:]])
    y = np.concatenate([np.arange(run) % 2, np.zeros(len(mem) - 1)]).astype(np.float32)
    (w,) = knn_weights(dup, mem[:1], [2], index=KnnIndex.build(dup))
    assert (w @ y)[0] == pytest.approx(y[:run].mean())
    assert w.keys.shape[1] >= run


def test_the_stacked_adapters_score_the_same_with_the_index(tmp_path):
    rng = np.random.default_rng(3)
    mem, query = _clustered(3000), _clustered(64, seed=4)
    d, k, h = mem.shape[1], 2, 4
    base = Adapter(w1=rng.standard_normal((k, d, h)).astype(np.float32),
                   b1=np.zeros((k, h), np.float32), w2=np.ones((k, h), np.float32),
                   b2=np.zeros(k, np.float32), lin_w=np.zeros(d, np.float32),
                   lin_b=np.float32(0.5), knn_k=np.float32(10), knn_y=rng.random(3000, np.float32),
                   memory=mem)
    adapters = [base, replace(base, knn_k=np.float32(3), knn_y=rng.random(3000, np.float32))]
    KnnIndex.build(mem).save(tmp_path)
    index = KnnIndex.load(tmp_path, mem)
    indexed = [replace(a, index=index) for a in adapters]
    stacked = AdapterStack(indexed).raw(query)
    np.testing.assert_allclose(stacked, np.stack([a.raw(query) for a in indexed], axis=1),
                               atol=1e-6)
    exact = AdapterStack(adapters).raw(query)
    assert np.isclose(stacked, exact, atol=1e-6).mean() >= 0.9
    assert np.abs(stacked - exact).mean() < 0.002


def test_the_index_file_is_reproducible_optional_and_checked(tmp_path, monkeypatch):
    mem = _clustered(2000)
    a, b = tmp_path / "a", tmp_path / "b"
    KnnIndex.build(mem).save(a)
    KnnIndex.build(mem).save(b)
    digest = [hashlib.sha256((p / INDEX_FILE).read_bytes()).hexdigest() for p in (a, b)]
    assert digest[0] == digest[1]  # the artifact's version does not change with each build
    assert KnnIndex.load(tmp_path / "none", mem) is None
    with pytest.raises(ValueError, match="the memory 1999 32-d rows: rebuild the index"):
        KnnIndex.load(a, mem[:-1])
    monkeypatch.setenv("IPR_KNN_NPROBE", "7")
    assert KnnIndex.load(a, mem).index.nprobe == 7
    monkeypatch.setenv("IPR_KNN_INDEX", "off")
    assert KnnIndex.load(a, mem) is None
