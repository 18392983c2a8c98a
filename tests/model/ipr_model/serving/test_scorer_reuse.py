"""A hot swap to a version whose encoder files are the same bytes reuses the loaded encoder (no
second onnxruntime session); a version with another encoder gets its own."""

from __future__ import annotations

import shutil

from ipr_model.artifacts.manifest import read_manifest, write_manifest
from ipr_model.serving.scorer import Scorer


def copy_as_new_version(src, dst, change_encoder: bool = False):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("manifest.json"))
    (dst / "NOTES.txt").write_text(f"a copy of {src}\n")
    if change_encoder:
        config = dst / "encoder" / "encoder.json"
        config.write_text(config.read_text() + "\n")
    old = read_manifest(src)
    write_manifest(dst, old.models, old.carried_over(), parent=old.version)
    return dst


def test_the_encoder_is_reused_only_when_its_files_are_the_same(small_artifacts, tmp_path):
    first = Scorer.load(small_artifacts)
    same = Scorer.load(copy_as_new_version(small_artifacts, tmp_path / "v2"), reuse=first)
    other = Scorer.load(copy_as_new_version(small_artifacts, tmp_path / "v3", True), reuse=first)
    assert same.version != first.version and same.encoder is first.encoder
    assert other.encoder is not first.encoder
    texts = ["what is 2 + 2?", "write a haiku about Kafka"]
    assert (same.score(texts).quality == first.score(texts).quality).all()
