"""The router's side of versions over Kafka, without a broker: whether the announced location is
readable here, which versions it has at hand, and pruning what it received."""

from __future__ import annotations

import os

from schemas import ModelUpdate
from streams.control.versions import can_read, local_versions, prune_received
from tests.unit.ipr_model.artifacts.test_chunks import version


def test_the_location_counts_only_when_it_holds_the_announced_manifest(tmp_path):
    v0 = version(tmp_path / "v0")
    update = ModelUpdate(version=v0.version, location=str(v0.root), sha256=v0.sha256,
                         models=v0.models)
    assert can_read(update)
    assert not can_read(update.model_copy(update={"sha256": "0" * 64}))
    assert not can_read(update.model_copy(update={"location": str(tmp_path / "elsewhere")}))


def test_local_versions_are_the_artifacts_the_served_one_and_the_received_ones(tmp_path):
    received = tmp_path / "received"
    for name in ("b", "a", ".a.tmp"):
        (received / name).mkdir(parents=True)
    assert local_versions(tmp_path / "base", None, tmp_path / "none") == [tmp_path / "base"]
    assert local_versions(tmp_path / "base", tmp_path / "cur", received) == [
        tmp_path / "base", tmp_path / "cur", received / "a", received / "b"]


def test_pruning_keeps_the_newest_and_the_served_version(tmp_path):
    for i, name in enumerate(["old", "served", "mid", "new"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    prune_received(tmp_path, 2, tmp_path / "served")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid", "new", "served"]
