"""Which models a worker serves, as `ipr worker --model` names them."""

from __future__ import annotations

import asyncio

import pytest

from streams.worker.run import EVERY, build_backends
from streams.worker.service import WorkerConfigError
from streams.worker.settings import WorkerSettings


def test_replay_serves_every_model_of_the_dataset_by_default_or_with_a_star(data_dir) -> None:
    s = WorkerSettings()
    for given in ([], [EVERY]):
        models, _, _ = build_backends(s, given, "replay", data_dir / "zeroeval")
        assert len(models) == 28
    models, _, _ = build_backends(s, ["gemma-2-2b-it"], "replay", data_dir / "zeroeval")
    assert models == ["gemma-2-2b-it"]


def test_openai_serves_every_model_of_the_artifacts_with_a_star(tmp_path) -> None:
    s = WorkerSettings(known_models=["a", "b", "c"])
    models, _, close = build_backends(s, [EVERY], "openai")
    assert models == ["a", "b", "c"]
    asyncio.run(close())
    with pytest.raises(WorkerConfigError, match="needs at least one --model"):
        build_backends(s, [], "openai")
    with pytest.raises(WorkerConfigError, match="model.s. z not in IPR_WORKER_KNOWN_MODELS"):
        build_backends(s, ["z"], "openai")
