"""The feedback service's pure decisions: when to recalibrate, which labels to refuse."""

from __future__ import annotations

from schemas import QualityFeedback
from streams.feedback import due, judge, settings


def fb(model: str = "m1") -> QualityFeedback:
    return QualityFeedback(prompt_id="p", model_id=model, quality=0.0, source="test")


def test_due_on_enough_labels_or_old_enough_with_some():
    assert due(settings.min_labels, 0.0)
    assert not due(settings.min_labels - 1, settings.recal_interval_s - 1)
    assert due(1, settings.recal_interval_s)
    assert not due(0, 10 * settings.recal_interval_s)


def test_judge_names_why_a_label_is_unusable():
    models = frozenset({"m1", "m2"})
    assert judge(fb(), None, models)[0] == "unknown_prompt"
    assert judge(fb("m9"), {"model": "m1"}, models)[0] == "unknown_model"
    kind, message = judge(fb("m2"), {"model": "m1"}, models)
    assert kind == "wrong_model" and "routed to 'm1'" in message
    assert judge(fb(), {"model": "m1"}, models) is None
