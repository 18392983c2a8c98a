"""Kafka administration the services use in production: create the topics they need; read a
consumer group's committed offsets; and describe topics (leaders, replicas, in-sync replicas,
configs) for the tests and the tools.

Works against any Kafka (a company's cluster, MSK, Confluent, the local dev broker of
``streams.kafka.local``).

KafkaAdminError (IprError, RuntimeError)   a topic could not be created or described, or has
                                           no leader in time.
  KafkaConnectError                        the cluster cannot be reached (address, credentials,
                                           TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka.errors import KafkaError

from schemas.errors import IprError
from streams.kafka.clients import Kafka, aiokafka_config, bootstrap_of
from streams.retry import Backoff, retry

T = TypeVar("T")
log = logging.getLogger(__name__)


class KafkaAdminError(IprError, RuntimeError):
    """A topic could not be created or did not get a leader in time."""


class KafkaConnectError(KafkaAdminError):
    """The cluster could not be reached: its address, credentials or certificates are wrong.
    ``unreachable``: nothing answered (refused, timed out: a broker down or starting), as
    opposed to a broker that answered and refused the client (TLS, SASL), which no wait mends."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


async def create_topics(
    kafka: Kafka,
    names: Iterable[str],
    partitions: int = 4,
    replication: int | None = None,
    timeout: float = 30.0,
    configs: dict[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet and wait until every partition has a leader.
    ``replication``: default the settings' ``topic_replication`` (1 for a bare address)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    names = list(names)
    if replication is None:
        replication = 1 if isinstance(kafka, str) else kafka.topic_replication
    admin = AIOKafkaAdminClient(**aiokafka_config(kafka))
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


@dataclass(frozen=True)
class PartitionState:
    """Which broker leads a partition, which hold it, and which of those are in sync."""

    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


async def describe_partitions(
    kafka: Kafka, topics: Iterable[str] | None = None
) -> dict[str, dict[int, PartitionState]]:
    """Every partition of ``topics`` (default: every topic, the internal ones included), by
    topic and partition number. KafkaAdminError when a topic cannot be described."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import for_code

    admin = AIOKafkaAdminClient(**aiokafka_config(kafka))
    await admin.start()
    try:
        described = await admin.describe_topics(None if topics is None else list(topics))
    finally:
        await admin.close()
    out: dict[str, dict[int, PartitionState]] = {}
    for t in described:
        if t["error_code"]:
            raise KafkaAdminError(f"describing topic {t['topic']!r} failed: "
                                  f"{for_code(t['error_code']).__name__}")
        out[t["topic"]] = {
            p["partition"]: PartitionState(p["leader"], tuple(p["replicas"]), tuple(p["isr"]))
            for p in t["partitions"]
        }
    return out


async def group_state(kafka: Kafka, group: str) -> tuple[str, int]:
    """A consumer group's state ("Stable", "PreparingRebalance", "Empty", ...) and member count."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**aiokafka_config(kafka))
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _error, _id, state, _ptype, _protocol, members, *_ = response.groups[0]
    return state, len(members)


async def committed_offsets(
    kafka: Kafka, group: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The offsets consumer group ``group`` has committed for ``partitions`` (topic, partition);
    a partition with none committed is left out."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    admin = AIOKafkaAdminClient(**aiokafka_config(kafka))
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(t, p) for t, p in partitions])
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in got.items() if meta.offset >= 0}


async def topic_config(kafka: Kafka, topic: str, names: Iterable[str]) -> dict[str, str]:
    """The values a topic has for config ``names`` (its own or the cluster's default)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    wanted = list(names)
    admin = AIOKafkaAdminClient(**aiokafka_config(kafka))
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, dict.fromkeys(wanted))])
    finally:
        await admin.close()
    out: dict[str, str] = {}
    for response in responses:
        for _code, message, _type, _name, entries in response.resources:
            if _code:
                raise KafkaAdminError(f"describing the config of {topic!r} failed: {message}")
            out.update({e[0]: e[1] for e in entries if e[0] in wanted})
    return out


def create_topics_sync(
    kafka: Kafka, names: Iterable[str], partitions: int = 4, configs: dict[str, str] | None = None
) -> None:
    """`create_topics` for sync callers."""
    run_sync(create_topics(kafka, names, partitions, configs=configs))



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



async def broker_count(kafka: Kafka, timeout_s: float = 10.0) -> int:
    """How many brokers the cluster reports; KafkaConnectError (in one line: what was tried,
    over what, and why it failed) when it cannot be reached within ``timeout_s``."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**aiokafka_config(kafka), request_timeout_ms=5000)
    with _client_errors() as (seen, errors):
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
            return len((await asyncio.wait_for(admin.describe_cluster(), timeout_s))["brokers"])
        except (TimeoutError, KafkaError, OSError, ssl.SSLError) as e:
            unreachable = all(_unanswered(x) for x in [*errors, e] if x is not None)
            raise KafkaConnectError(_why(kafka, e, seen), unreachable) from None
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


async def wait_for_cluster(kafka: Kafka, timeout_s: float, who: str) -> int:
    """`broker_count`, retried while nothing answers (a broker down or still starting) for up
    to ``timeout_s``, saying once that ``who`` waits; a client the cluster refuses (TLS, SASL)
    fails at once. KafkaConnectError (one line: where, why, how long it waited) at the end."""
    began = time.monotonic()
    deadline = began + timeout_s

    async def ask() -> int:
        try:
            return await broker_count(kafka, max(1.0, min(10.0, deadline - time.monotonic())))
        except KafkaConnectError as e:
            if e.unreachable:
                raise _Unanswered(e) from None
            raise

    def waiting(exc: _Unanswered, attempt: int, _delay: float) -> None:
        if attempt == 1:  # once: the retries are not news
            log.warning("%s: %s; waiting up to %.0f s for it to answer", who, exc.error,
                        timeout_s)

    try:
        count = await retry(ask, retry_on=_Unanswered, backoff=Backoff(first_s=0.5, max_s=5.0),
                            deadline_s=timeout_s, on_retry=waiting)
    except _Unanswered as u:
        raise KafkaConnectError(f"{u.error}; expected an answer within {timeout_s:.0f} s, none "
                                "came", u.error.unreachable) from None
    if time.monotonic() - began > 1.0:
        log.warning("%s: Kafka at %s answered after %.1f s", who, bootstrap_of(kafka),
                    time.monotonic() - began)
    return count


class _Unanswered(Exception):
    """A broker_count that nothing answered: waited for (a refusal is not)."""

    def __init__(self, error: KafkaConnectError) -> None:
        super().__init__(str(error))
        self.error = error


def _unanswered(error: BaseException) -> bool:
    """Whether a connection error means nothing answered (as opposed to TLS or SASL refusing)."""
    if isinstance(error, ssl.SSLError):
        return False
    if isinstance(error, KafkaError):  # SASL refused, or aiokafka's own wrapping of a failure
        from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError

        return isinstance(error, KafkaConnectionError | NodeNotReadyError | RequestTimedOutError)
    return isinstance(error, OSError | TimeoutError)


@contextlib.contextmanager
def _client_errors() -> Iterator[tuple[list[str], list[BaseException | None]]]:
    """aiokafka logs why a connection failed (a refused password, an untrusted certificate) and
    raises only "Unable to bootstrap": keep those messages (and the errors they carry) for the
    error, off the console."""
    seen: list[str] = []
    errors: list[BaseException | None] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())
            args = record.args if isinstance(record.args, tuple) else ()
            errors.append(args[-1] if args and isinstance(args[-1], BaseException) else None)

    logger, handler = logging.getLogger("aiokafka"), Keep(logging.ERROR)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield seen, errors
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _why(kafka: Kafka, e: BaseException, seen: list[str]) -> str:
    protocol = "PLAINTEXT" if isinstance(kafka, str) else kafka.kafka_security_protocol
    if seen:
        cause = seen[-1].split(": ", 1)[-1]  # after 'Unable connect to "host:port"'
    elif isinstance(e, TimeoutError):
        cause = "no answer in time"
    else:
        cause = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return f"cannot reach Kafka at {bootstrap_of(kafka)} over {protocol}: {cause.splitlines()[0]}"


def check_connection(kafka: Kafka, timeout_s: float = 20.0) -> None:
    """Fail fast, in one line, when the cluster cannot be reached (a wrong password, an
    untrusted certificate, a wrong address) instead of retrying forever."""
    run_sync(broker_count(kafka, timeout_s))
