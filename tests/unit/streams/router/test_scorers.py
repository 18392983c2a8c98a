"""A version the router cannot load is refused: logged, counted, and the current one kept."""

from __future__ import annotations

import logging

from streams.router import metrics
from streams.router.scorers import ScorerHolder


def refused() -> float:
    return metrics.ARTIFACT_SWAPS.labels("refused")._value.get()


def test_a_refused_version_is_logged_and_counted(tmp_path, caplog):
    holder = ScorerHolder(tmp_path / "base")
    before = refused()
    with caplog.at_level(logging.ERROR):
        assert not holder.swap(tmp_path / "missing")
        holder.refuse("router.artifacts (version v9)", "models/a/card.json is tampered")
    assert refused() == before + 2
    assert "refused artifact version at router.artifacts (version v9)" in caplog.text
    assert holder.current_version() is None and holder.root == tmp_path / "base"


def test_the_shadow_holder_counts_in_its_own_metric_and_starts_empty(tmp_path, caplog):
    live = ScorerHolder(tmp_path / "base")
    shadow = ScorerHolder(tmp_path / "base", partner=live, what="shadow artifacts",
                          swaps=metrics.SHADOW_LOADS)
    before, before_live = metrics.SHADOW_LOADS.labels("refused")._value.get(), refused()
    with caplog.at_level(logging.ERROR):
        assert not shadow.swap(tmp_path / "missing")
    assert metrics.SHADOW_LOADS.labels("refused")._value.get() == before + 1
    assert refused() == before_live  # the live count is the live version's only
    assert "refused shadow artifact version at" in caplog.text
    assert shadow.loaded() is None and shadow.clear() is None
