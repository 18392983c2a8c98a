"""The whole system (router, replay worker, feedback service) as child processes, for the tests
that change the broker under it; settings come from the environment the test set."""

from __future__ import annotations

import asyncio

from benchmarks.processes import Service
from ipr_model.artifacts.manifest import read_manifest
from schemas import PromptRequest, encode
from schemas.topics import model_topic
from streams.kafka.admin import create_topics
from streams.kafka.settings import KafkaSettings
from tests.waits import wait_for_log


def prepare(settings: KafkaSettings, artifacts) -> tuple[list[str], list[str]]:
    """(the artifacts' models, their topics), with every topic the system reads created."""
    models = read_manifest(artifacts).models
    model_topics = sorted({model_topic(m) for m in models})
    asyncio.run(create_topics(settings, [settings.prompts_in, settings.responses,
                                         settings.prompts_dlq, *model_topics]))
    return models, model_topics


def prompt_events(zeroeval, run: str, n: int) -> list[tuple[bytes, bytes]]:
    test = zeroeval.split("test")
    return [(f"{run}:{i}".encode(), encode(PromptRequest(
        prompt_id=f"{run}:{i}", text=test.prompts[i % len(test)]))) for i in range(n)]


def start(artifacts, dataset, models: list[str], tmp_path) -> list[Service]:
    """A router, a replay worker for ``models`` and a feedback service."""
    return [
        Service("router", ["router", "--artifacts", str(artifacts)], {}, tmp_path),
        Service("worker", ["worker", "--backend", "replay", "--dataset", str(dataset),
                           *sum((["-m", m] for m in models), [])], {}, tmp_path),
        Service("feedback", ["feedback", "--artifacts", str(artifacts)], {}, tmp_path),
    ]


def wait_until_up(services: list[Service], models: list[str], timeout: float = 180.0) -> None:
    """Until each service logged its start-up line (the worker one per model it serves)."""
    for s in services:
        wait_for_log(s, f"{s.name}: consuming", timeout,
                     count=len(models) if s.name == "worker" else 1)
