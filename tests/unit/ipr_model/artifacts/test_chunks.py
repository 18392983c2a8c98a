"""A version as content-addressed chunks: which files changed, a version rebuilt from records and
the versions at hand, and every refusal (tampered, missing, parent unknown)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ipr_model.artifacts.manifest import read_manifest, write_manifest
from ipr_model.errors import ArtifactError
from ipr_model.artifacts.chunks import (
    CHUNK_BYTES,
    assemble,
    changed_files,
    chunks,
    materialise,
    retired_keys,
    version_records,
)
from schemas.topics import file_chunk_key, parse_file_chunk_key

FILES = {"encoder/model.onnx": b"onnx" * 1000, "encoder/tokenizer.json": b"{}",
         "encoder/encoder.json": b'{"dim": 8}', "models/a/card.json": b'{"id": "a"}',
         "models/a/adapter.npz": b"adapter a", "models/b/card.json": b'{"id": "b"}',
         "models/b/adapter.npz": b"adapter b"}


def version(root: Path, parent=None, **changed: bytes):
    """An artifact directory: the files of ``parent`` (or FILES), with ``changed`` ones
    (``models__a__card_json`` style names: '__' is '/', the last '_' is '.')."""
    if parent is not None:
        shutil.copytree(parent.root, root, ignore=shutil.ignore_patterns("manifest.json"))
    else:
        for rel, data in FILES.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
    for name, data in changed.items():
        rel = name.replace("__", "/")
        rel = rel[::-1].replace("_", ".", 1)[::-1]
        (root / rel).write_bytes(data)
    write_manifest(root, ["a", "b"], {}, parent=parent.version if parent else None)
    return read_manifest(root)


@pytest.fixture
def v0(tmp_path):
    return version(tmp_path / "feedback" / "v0")


@pytest.fixture
def v1(tmp_path, v0):
    return version(tmp_path / "feedback" / "v1", v0, models__a__card_json=b'{"id": "a", "x": 1}',
                   models__a__feedback_npz=b"correction" * 10)


def test_the_changed_files_are_those_new_or_with_other_content(v0, v1):
    assert changed_files(v1, v0) == ["models/a/card.json", "models/a/feedback.npz"]
    assert changed_files(v1, None) == sorted([*FILES, "models/a/feedback.npz"])


def test_records_are_the_changed_files_and_the_manifest_keyed_by_content(v0, v1):
    records = version_records(v1, v0)
    keys = {parse_file_chunk_key(k)[0] for k, _ in records}
    files = v1.data["files"]
    assert keys == {files["models/a/card.json"], files["models/a/feedback.npz"], v1.sha256}
    assert parse_file_chunk_key(records[-1][0]) == (v1.sha256, 0, 1)  # the manifest comes last


def test_a_big_file_is_chunked_under_the_message_limit_and_assembled_back():
    data = bytes(range(256)) * (CHUNK_BYTES // 100)
    parts = chunks(data, "ab" * 32)
    assert len(parts) == 3 and all(len(v) <= CHUNK_BYTES for _, v in parts)
    assert assemble(parts) == {"ab" * 32: data}
    assert assemble(parts[:2]) == {}  # a file missing a chunk is left out
    assert parse_file_chunk_key(b"ab:0/1") is None and parse_file_chunk_key(None) is None
    assert parse_file_chunk_key(file_chunk_key("ab" * 32, 3, 3)) is None  # index past count


def test_a_version_is_rebuilt_from_records_and_a_local_base(tmp_path, v0, v1):
    base = version(tmp_path / "router" / "base")  # the router's own copy of v0
    assert base.data["files"] == v0.data["files"]
    blobs = assemble(version_records(v1, v0))
    out = tmp_path / "router" / "received" / v1.version
    got = materialise(v1.sha256, blobs, [base.root], out)
    assert got.sha256 == v1.sha256 and read_manifest(out).version == v1.version
    enc = "encoder/model.onnx"  # unchanged: a hard link to the router's copy, not the feedback's
    assert (out / enc).stat().st_ino == (base.root / enc).stat().st_ino
    assert (out / "models/a/feedback.npz").read_bytes() == b"correction" * 10


def test_a_tampered_file_is_refused_and_nothing_is_left(tmp_path, v0, v1):
    target = v1.data["files"]["models/a/card.json"]
    records = [(k, b'{"id": "a", "x": 2}' if parse_file_chunk_key(k)[0] == target else v)
               for k, v in version_records(v1, v0)]
    out = tmp_path / "received" / v1.version
    with pytest.raises(ArtifactError, match="models/a/card.json from the topic is tampered"):
        materialise(v1.sha256, assemble(records), [v0.root], out)
    assert not out.exists() and not list(out.parent.iterdir())


def test_a_manifest_that_is_not_the_announced_one_is_refused(tmp_path, v0, v1):
    blobs = assemble(version_records(v1, v0))
    blobs[v1.sha256] = blobs[v1.sha256].replace(b"models", b"modelz", 1)
    with pytest.raises(ArtifactError, match="the manifest is tampered"):
        materialise(v1.sha256, blobs, [v0.root], tmp_path / "out")
    with pytest.raises(ArtifactError, match="no manifest with sha256"):
        materialise(v1.sha256, {}, [v0.root], tmp_path / "out")


def test_without_the_parent_the_unchanged_files_are_missing(tmp_path, v0, v1):
    blobs = assemble(version_records(v1, v0))
    with pytest.raises(ArtifactError, match=f"expected its parent {v0.version}"):
        materialise(v1.sha256, blobs, [tmp_path / "nothing"], tmp_path / "out")


def test_a_version_two_steps_ahead_needs_only_the_base(tmp_path, v0, v1):
    """Content keys: v2's files introduced by v1 are found on the topic, not in a v1 directory."""
    v2 = version(tmp_path / "feedback" / "v2", v1, models__b__card_json=b'{"id": "b", "y": 1}')
    blobs = assemble(version_records(v1, v0) + version_records(v2, v1))
    got = materialise(v2.sha256, blobs, [v0.root], tmp_path / "out")
    assert got.data["files"] == v2.data["files"]


def test_tombstones_retire_only_what_no_kept_version_uses(tmp_path, v0, v1):
    v2 = version(tmp_path / "feedback" / "v2", v1, models__b__card_json=b'{"id": "b", "y": 1}')
    keys = retired_keys([v1], [v2])
    retired = {parse_file_chunk_key(k)[0] for k in keys}
    assert v1.sha256 in retired  # its manifest
    assert v1.data["files"]["models/a/feedback.npz"] not in retired  # v2 still uses it
    assert v1.data["files"]["models/b/card.json"] in retired  # v2 replaced it
    records = version_records(v1, v0) + [(k, None) for k in keys]
    assert v1.sha256 not in assemble(records)
