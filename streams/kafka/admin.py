"""Kafka administration the services use in production: create the topics they need.

Works against any Kafka (a company's cluster, MSK, Confluent, the local dev broker of
``streams.kafka.local``).

KafkaAdminError (RuntimeError)   a topic could not be created, or has no leader in time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


class KafkaAdminError(RuntimeError):
    """A topic could not be created or did not get a leader in time."""


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 4,
    replication: int = 1,
    timeout: float = 30.0,
    configs: dict[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet and wait until every partition has a leader."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    names = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=replication,
                      topic_configs=configs or {}) for n in names]
        )
        for topic, code, *_ in response.topic_errors:
            if code and for_code(code) is not TopicAlreadyExistsError:
                raise KafkaAdminError(f"creating topic {topic!r} failed: {for_code(code).__name__}")
        deadline = time.monotonic() + timeout
        while True:
            described = await admin.describe_topics(names)
            pending = [
                t["topic"] for t in described
                if t["error_code"] or not t["partitions"]
                or any(p["leader"] < 0 for p in t["partitions"])
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise KafkaAdminError(f"topics without leaders after {timeout:.0f} s: {pending}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def create_topics_sync(
    bootstrap: str, names: Iterable[str], partitions: int = 4, configs: dict[str, str] | None = None
) -> None:
    """`create_topics` for sync callers."""
    run_sync(create_topics(bootstrap, names, partitions, configs=configs))



def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(exc)

    t = threading.Thread(target=target, name="ipr-kafka-sync")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]



async def broker_count(bootstrap: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        return len((await admin.describe_cluster())["brokers"])
    finally:
        await admin.close()
