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
