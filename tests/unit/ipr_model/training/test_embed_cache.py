"""The embedding cache: a second run encodes nothing, a different encoder key shares nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ipr_model.errors import ArtifactError
from ipr_model.training.embed_cache import EmbeddingCache, encode_cached, encoder_key


class FakeEncoder:
    """Deterministic vectors from the text hash; records what it was asked to encode."""

    dim = 8

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little") for t in texts]
        v = np.stack([np.random.default_rng(s).normal(size=self.dim) for s in seeds])
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


TEXTS = [f"prompt {i}" for i in range(600)] + ["prompt 3", "héllo 🚀"]


def test_second_call_encodes_nothing(tmp_path):
    enc = FakeEncoder()
    first = encode_cached(enc, TEXTS, EmbeddingCache("k1", tmp_path))
    assert sum(map(len, enc.calls)) == 601  # the duplicate is encoded once
    np.testing.assert_array_equal(first, enc.encode(TEXTS))

    enc.calls.clear()
    cache = EmbeddingCache("k1", tmp_path)  # a new process would reopen the file
    second = encode_cached(enc, TEXTS, cache)
    assert enc.calls == []
    assert (cache.hits, cache.misses) == (len(TEXTS), 0)
    np.testing.assert_array_equal(second, first)
    assert len(cache) == 601


def test_partial_hit_encodes_only_the_misses(tmp_path):
    enc = FakeEncoder()
    cache = EmbeddingCache("k1", tmp_path)
    encode_cached(enc, TEXTS[:10], cache)
    enc.calls.clear()
    out = encode_cached(enc, ["new one", *TEXTS[:10], "new two"], cache)
    assert enc.calls == [["new one", "new two"]]
    assert (cache.hits, cache.misses) == (10, 10 + 2)
    np.testing.assert_array_equal(out[1:11], enc.encode(TEXTS[:10]))


def test_different_encoder_key_misses(tmp_path):
    enc = FakeEncoder()
    encode_cached(enc, TEXTS[:5], EmbeddingCache("k1", tmp_path))
    other = EmbeddingCache("k2", tmp_path)
    encode_cached(enc, TEXTS[:5], other)
    assert (other.hits, other.misses) == (0, 5)


def test_progress_counts_up_to_all_texts(tmp_path):
    enc = FakeEncoder()
    cache = EmbeddingCache("k1", tmp_path)
    encode_cached(enc, TEXTS[:100], cache)
    seen: list[int] = []
    encode_cached(enc, TEXTS, cache, progress=seen.append)
    assert seen[0] == 101  # the hits at once ("prompt 3" appears twice)
    assert seen == [101, 101 + 256, len(TEXTS)]  # then one call per encoded chunk of 256


def test_no_cache_encodes_everything(tmp_path):
    enc = FakeEncoder()
    out = encode_cached(enc, TEXTS[:3], None)
    assert out.shape == (3, 8) and enc.calls == [TEXTS[:3]]


def test_every_cache_lives_inside_the_cache_dir(tmp_path, monkeypatch):
    from ipr_model.artifacts.cache import cache_dir

    monkeypatch.setenv("IPR_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    cache = EmbeddingCache("abc")
    assert cache.path == tmp_path / "c" / "embeddings" / "abc.sqlite"
    monkeypatch.delenv("IPR_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "ipr-router"


def test_encoder_key_depends_on_files_and_max_length(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "tokenizer.json").write_text("{}")
    k = encoder_key(tmp_path, 256)
    assert k == encoder_key(tmp_path, 256) and k != encoder_key(tmp_path, 128)
    assert encoder_key(tmp_path, 256, 0) == k != encoder_key(tmp_path, 256, 128)
    (tmp_path / "model.onnx").write_bytes(b"graph2")
    assert encoder_key(tmp_path, 256) != k
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="Could not find tokenizer.json"):
        encoder_key(tmp_path, 256)


def test_wrong_dim_in_cache_is_an_error(tmp_path):
    encode_cached(FakeEncoder(), ["a"], EmbeddingCache("k1", tmp_path))
    small = FakeEncoder()
    small.dim = 4
    with pytest.raises(ArtifactError, match="expected 4"):
        encode_cached(small, ["a"], EmbeddingCache("k1", tmp_path))
