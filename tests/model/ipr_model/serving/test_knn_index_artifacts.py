"""An artifact trained with the kNN index: the index is one of its hashed files, every card's kNN
part searches it, and a scorer told to scan (IPR_KNN_INDEX=off) routes the real test prompts to
the same models."""

from __future__ import annotations

import numpy as np
import pytest

from ipr_model.artifacts.manifest import read_manifest
from ipr_model.serving.decision import decide
from ipr_model.serving.knn_index import INDEX_FILE
from ipr_model.serving.scorer import Scorer

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def indexed_artifacts(tmp_path_factory, zeroeval_slice):
    from ipr_model.training.fitting import AdapterConfig
    from ipr_model.training.train import train

    out = tmp_path_factory.mktemp("indexed") / "zeroeval-slice"
    train(zeroeval_slice[0], out, cfg=AdapterConfig(hidden=16, epochs=80, lr=5e-3),
          knn_index=True)
    return out


def test_the_router_searches_the_index_and_routes_as_the_scan(indexed_artifacts, zeroeval_slice,
                                                             monkeypatch):
    assert INDEX_FILE in read_manifest(indexed_artifacts).data["files"]
    indexed = Scorer.load(indexed_artifacts)
    (index,) = {id(c.adapter.index) for c in indexed.cards}  # one index, shared
    assert index != id(None)
    monkeypatch.setenv("IPR_KNN_INDEX", "off")
    scanned = Scorer.load(indexed_artifacts)
    assert all(c.adapter.index is None for c in scanned.cards)
    texts = list(zeroeval_slice[1].prompts)
    a, b = indexed.score(texts), scanned.score(texts)
    assert np.abs(a.quality - b.quality).mean() < 0.005
    same = [x.model_id == y.model_id for x, y in zip(
        decide(indexed, a, [0.1] * len(texts)), decide(scanned, b, [0.1] * len(texts)),
        strict=True)]
    assert np.mean(same) >= 0.95
