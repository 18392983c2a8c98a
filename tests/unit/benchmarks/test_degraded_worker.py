"""The drift scenario's degraded replay worker (benchmarks.degraded_worker)."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.degraded_worker import Degradation, Degraded
from ipr_model.training.datasets import Dataset
from streams.worker.backends.replay import ReplayBackend
from tests.unit.streams.worker.test_backends import routed


def test_the_degraded_model_reports_quality_zero_on_its_task_only(zeroeval: Dataset) -> None:
    model = zeroeval.model_ids[0]
    good = [i for i in range(len(zeroeval)) if zeroeval.quality[i, 0] == 1.0]
    row = good[0]
    task = zeroeval.tasks[row]
    other = next(i for i in good if zeroeval.tasks[i] != task)
    backend = Degraded(ReplayBackend(zeroeval), Degradation(model, task, "drift"))

    def answer(i: int, model_id: str = model, marker: str = "drift"):
        r = routed(f"{marker}:{zeroeval.ids[i]}", model_id, zeroeval.prompts[i])
        return asyncio.run(backend.complete(r))

    c = answer(row)
    assert c.quality == 0.0 and c.error is None
    assert c.cost_usd == float(zeroeval.cost[row, 0])  # the cost is still the recorded one
    assert answer(other).quality == 1.0  # another task
    assert answer(row, marker="plain").quality == 1.0  # a prompt id without the marker
    second = zeroeval.model_ids[1]
    assert answer(row, model_id=second).quality == float(zeroeval.quality[row, 1])


def test_a_degradation_must_name_model_task_and_marker() -> None:
    assert Degradation.parse("m|t|x") == Degradation("m", "t", "x")
    for bad in ("m|t", "m||x", "m|t|x|y"):
        with pytest.raises(SystemExit, match="MODEL|TASK|MARKER"):
            Degradation.parse(bad)
