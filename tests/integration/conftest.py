"""A real Kafka for the integration tests, once per session.

Order: `IPR_KAFKA_BOOTSTRAP` (an existing cluster); a testcontainers Kafka when a Docker engine
answers; otherwise the local Apache Kafka of `streams.kafka.local` (needs java, and mvn once).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.kafka import local as broker

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no SDK, no socket, no engine: all mean "no Docker"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    existing = os.environ.get(broker.ENV_BOOTSTRAP)
    if existing:
        yield existing
    elif _docker_engine_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        with broker.LocalKafka() as kafka:
            log.info("local Kafka started in %.1f s", kafka.startup_seconds)
            yield kafka.bootstrap


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A suffix for topic and group names that no other test (or run) uses."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", request.node.name)[:60]
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def texts(zeroeval) -> list[str]:
    """Real prompts (the router tests cut them short)."""
    return zeroeval.prompts
