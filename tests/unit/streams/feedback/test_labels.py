"""The feedback service's pure decisions: when to recalibrate, which labels to refuse."""

from __future__ import annotations

from schemas import QualityFeedback
from streams.feedback.labels import due, judge, versions_to_remove

MIN, EVERY = 50, 600.0


def fb(model: str = "m1") -> QualityFeedback:
    return QualityFeedback(prompt_id="p", model_id=model, quality=0.0, source="test")


def test_due_on_enough_labels_or_old_enough_with_some():
    assert due(MIN, 0.0, MIN, EVERY)
    assert not due(MIN - 1, EVERY - 1, MIN, EVERY)
    assert due(1, EVERY, MIN, EVERY)
    assert not due(0, 10 * EVERY, MIN, EVERY)


def test_judge_names_why_a_label_is_unusable():
    models = frozenset({"m1", "m2"})
    assert judge(fb(), None, models, "v1")[0] == "unknown_prompt"
    assert judge(fb("m9"), {"model": "m1"}, models, "v1")[0] == "unknown_model"
    kind, message = judge(fb("m2"), {"model": "m1"}, models, "v1")
    assert kind == "wrong_model" and "routed to 'm1'" in message
    assert judge(fb(), {"model": "m1"}, models, "v1") is None


def test_a_version_is_never_published_sooner_than_the_minimum_interval():
    assert not due(MIN, 0.0, MIN, EVERY, since_publish_s=10.0, min_publish_s=30.0)
    assert due(MIN, 0.0, MIN, EVERY, since_publish_s=30.0, min_publish_s=30.0)
    assert not due(0, EVERY, MIN, EVERY, since_publish_s=1e9, min_publish_s=30.0)


def test_old_versions_go_beyond_the_newest_kept_but_never_a_protected_one():
    versions = [(float(t), f"v{t}") for t in (5, 1, 4, 2, 3)]
    assert versions_to_remove(versions, 2, set()) == ["v3", "v2", "v1"]
    assert versions_to_remove(versions, 2, {"v2"}) == ["v3", "v1"]
    assert versions_to_remove(versions, 9, set()) == []
