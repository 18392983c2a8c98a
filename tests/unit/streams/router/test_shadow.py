"""The shadow's pure path: the same prompts decided by the candidate's own scores, with the live
routing's τ and models; a shadow that fails is counted and leaves the live outputs alone."""

from __future__ import annotations

import logging

import numpy as np

from ipr_model.serving.scorer import Scorer, Scores
from schemas import PromptRequest, encode
from streams.router import metrics
from streams.router.routing import Record, route_records
from streams.router.scorers import ScorerHolder
from streams.router.settings import RouterSettings
from streams.router.shadow import Shadow, shadow_decisions

IDS = ["big", "mid", "small"]
SECRET = "a user's prompt that fails the shadow"


class Table(Scorer):
    """The real rule (decision.decide) over fixed scores per model; counts what it encodes."""

    def __init__(self, version: str, quality, encoder: object, fails: bool = False):
        self.model_ids, self._version, self.quality = IDS, version, np.array(quality)
        self.encoder, self.encoded, self.fails = encoder, 0, fails

    @property
    def version(self) -> str:
        return self._version

    def score(self, texts):
        self.encoded += len(texts)
        return self.score_embeddings(np.ones((len(texts), 4), np.float32), texts)

    def score_embeddings(self, emb, texts):
        if self.fails and SECRET in texts:
            raise ValueError(f"cannot score {texts}")
        n = len(texts)
        return Scores(quality=np.tile(self.quality, (n, 1)),
                      cost=np.tile([10.0, 1.0, 0.1], (n, 1)), embeddings=emb)


def routed_batch(live: Scorer, texts: list[str], taus):
    records = [Record("prompts.in", 2, i, f"p{i}".encode(),
                      encode(PromptRequest(prompt_id=f"p{i}", text=t, tolerance=tau)))
               for i, (t, tau) in enumerate(zip(texts, taus, strict=True))]
    return route_records(records, live, 0.2).routed


def test_the_shadow_decides_the_live_prompts_with_its_own_scores():
    encoder = object()
    live = Table("v1", [0.9, 0.8, 0.3], encoder)
    shadow = Table("v2", [0.9, 0.5, 0.3], encoder)  # mid's correction: mid is worse
    routed = routed_batch(live, ["a", "b", "c"], [0.3, None, 1.0])
    assert [r.prompt.model_id for r in routed] == ["mid", "mid", "small"]
    got = shadow_decisions(routed, shadow, live)
    assert [d.decision.model_id for d in got] == ["big", "big", "small"]
    assert [(d.key, d.partition) for d in got] == [(b"p0", 2), (b"p1", 2), (b"p2", 2)]
    for d, r in zip(got, routed, strict=True):
        assert d.decision.router_version == "v2" and d.decision.shadow_of == "v1"
        assert d.decision.tolerance == r.prompt.tolerance  # the τ the live routing used
        assert d.decision.predicted_quality["mid"] == 0.5
        assert d.decision.routed_at == r.decision.routed_at
    assert shadow.encoded == 0  # the same encoder: the live embeddings are taken
    other = Table("v3", [0.9, 0.5, 0.3], object())
    assert len(shadow_decisions(routed, other, live)) == 3 and other.encoded == 3


def test_a_failing_shadow_is_logged_and_counted_and_the_others_are_decided(caplog):
    live_holder = ScorerHolder(RouterSettings().artifacts)
    shadow = Shadow(RouterSettings(), live_holder)
    live = Table("v1", [0.9, 0.8, 0.3], object())
    assert shadow.scorer() is None  # none started
    live_holder._scorer = live
    shadow.holder._scorer = Table("v2", [0.9, 0.5, 0.3], live.encoder, fails=True)
    routed = routed_batch(live, ["a", SECRET, "c"], [0.3, 0.3, 0.3])
    assert len(routed) == 3
    before = metrics.SHADOW_FAILURES._value.get()
    with caplog.at_level(logging.ERROR):
        got = shadow.decisions(routed, live)
    assert [d.key for d in got] == [b"p0", b"p2"]
    assert metrics.SHADOW_FAILURES._value.get() == before + 1
    assert "failed on 1 of 3 prompts (ValueError)" in caplog.text and SECRET not in caplog.text
    assert [r.prompt.model_id for r in routed] == ["mid", "mid", "mid"]  # untouched


def test_a_shadow_that_is_the_live_version_scores_nothing_and_stop_clears_it():
    live_holder = ScorerHolder(RouterSettings().artifacts)
    shadow = Shadow(RouterSettings(), live_holder)
    live = Table("v1", [0.9, 0.8, 0.3], object())
    live_holder._scorer = live
    shadow.holder._scorer = Table("v1", [0.9, 0.8, 0.3], live.encoder)  # promoted
    assert shadow.scorer() is None
    assert shadow.decisions(routed_batch(live, ["a"], [0.3]), live) == []
    shadow.holder._scorer = Table("v2", [0.9, 0.5, 0.3], live.encoder)
    assert shadow.scorer() is not None
    shadow.stop()
    assert shadow.scorer() is None and shadow.holder.current_version() is None
