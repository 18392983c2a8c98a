"""On-disk embedding cache, so a second training run re-encodes nothing.

Keyed by (encoder key, sha256 of the text). One sqlite file per encoder key under the cache root
(``embeddings/`` in :func:`ipr_model.artifacts.cache.cache_dir`), with one table::

    embeddings(text_sha256 BLOB PRIMARY KEY, vector BLOB)   -- vector: float32 bytes, dim values

The encoder key (:func:`encoder_key`) is the sha256 of model.onnx + tokenizer.json + its cut, so
a re-exported or differently truncated encoder never reads another's vectors. Texts themselves are
not stored (prompt text is user data), only their hashes.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from ipr_model.artifacts.cache import cache_dir
from ipr_model.errors import ArtifactError
from ipr_model.serving.texts import text_digest

ENCODE_CHUNK = 256  # texts encoded (and stored) per step between progress calls
_SQL_VARS = 500  # keys per SELECT ... IN (...) (sqlite's default limit is 999)


class Encoder(Protocol):
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def default_root() -> Path:
    return cache_dir() / "embeddings"


def encoder_key(encoder_dir: Path, max_length: int, tail_tokens: int = 0) -> str:
    """sha256 over model.onnx, tokenizer.json, max_length and tail_tokens of an encoder folder."""
    h = hashlib.sha256()
    for name in ("model.onnx", "tokenizer.json"):
        path = Path(encoder_dir) / name
        if not path.is_file():
            raise ArtifactError(f"Could not find {name} in {encoder_dir}")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    h.update(f"max_length={max_length}".encode())
    if tail_tokens:  # head-only encoders keep the key they always had
        h.update(f"tail_tokens={tail_tokens}".encode())
    return h.hexdigest()


class EmbeddingCache:
    """Vectors of one encoder, on disk. ``hits``/``misses`` count texts looked up."""

    def __init__(self, encoder_key: str, root: Path | None = None):
        if not encoder_key or not all(c.isalnum() or c in "-_" for c in encoder_key):
            raise ValueError(f"encoder_key must be non-empty [A-Za-z0-9_-], got {encoder_key!r}")
        self.encoder_key = encoder_key
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / f"{encoder_key}.sqlite"
        self._db = sqlite3.connect(self.path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings"
            " (text_sha256 BLOB PRIMARY KEY, vector BLOB NOT NULL)"
        )
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_encoder(cls, encoder, root: Path | None = None) -> EmbeddingCache:
        """The cache of a loaded :class:`~ipr_model.serving.encoder.OnnxEncoder` (keyed by its
        files)."""
        return cls(encoder_key(encoder.path, encoder.max_length, encoder.tail_tokens), root)

    def get(self, keys: list[bytes], dim: int) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), _SQL_VARS):
            chunk = keys[start : start + _SQL_VARS]
            rows = self._db.execute(
                "SELECT text_sha256, vector FROM embeddings WHERE text_sha256 IN "
                f"({','.join('?' * len(chunk))})",
                chunk,
            )
            for key, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape != (dim,):
                    raise ArtifactError(
                        f"{self.path}: cached vector has {vector.size} values, expected {dim}"
                    )
                found[bytes(key)] = vector
        return found

    def put(self, keys: list[bytes], vectors: np.ndarray) -> None:
        rows = [
            (k, np.asarray(v, dtype=np.float32).tobytes())
            for k, v in zip(keys, vectors, strict=True)
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?)", rows)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def encode_cached(
    encoder: Encoder,
    texts: list[str],
    cache: EmbeddingCache | None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embed ``texts`` [n, dim], encoding only the texts missing from ``cache`` (and storing them).

    ``progress(n_done)`` is called with the running count of texts done (cache hits first, then
    after each encoded chunk), so a caller can show ``n_done / len(texts)``.
    """
    dim = encoder.dim
    out = np.empty((len(texts), dim), dtype=np.float32)
    keys = [text_digest(t) for t in texts]
    found = cache.get(list(dict.fromkeys(keys)), dim) if cache is not None else {}

    missing: dict[bytes, list[int]] = {}  # unique missing text -> its positions
    for i, key in enumerate(keys):
        if key in found:
            out[i] = found[key]
        else:
            missing.setdefault(key, []).append(i)
    n_hit = len(texts) - sum(len(v) for v in missing.values())
    if cache is not None:
        cache.hits += n_hit
        cache.misses += len(texts) - n_hit
    done = n_hit
    if progress is not None:
        progress(done)

    todo = list(missing.items())
    for start in range(0, len(todo), ENCODE_CHUNK):
        chunk = todo[start : start + ENCODE_CHUNK]
        vectors = np.asarray(
            encoder.encode([texts[positions[0]] for _, positions in chunk]), dtype=np.float32
        )
        for (_, positions), vector in zip(chunk, vectors, strict=True):
            out[positions] = vector
            done += len(positions)
        if cache is not None:
            cache.put([key for key, _ in chunk], vectors)
        if progress is not None:
            progress(done)
    return out
