"""The one place that turns :class:`KafkaSettings` into client configuration: aiokafka's keyword
arguments (producers, consumers, the admin client) and Faust's broker and credentials. Nothing
else reads the connection settings.

A plain ``"host:port"`` string stands for a PLAINTEXT connection (the local dev broker, tests).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from streams.kafka.settings import KafkaSettings
from streams.retry import Backoff, retry

Kafka = KafkaSettings | str


def bootstrap_of(kafka: Kafka) -> str:
    return kafka if isinstance(kafka, str) else kafka.kafka_bootstrap


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL connections (verifying the brokers' certificates and
    host names), else None."""
    if kafka.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(
        cafile=None if kafka.kafka_ssl_cafile is None else str(kafka.kafka_ssl_cafile)
    )
    if kafka.kafka_ssl_certfile is not None:
        ctx.load_cert_chain(str(kafka.kafka_ssl_certfile), str(kafka.kafka_ssl_keyfile))
    return ctx


def aiokafka_config(kafka: Kafka) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    cfg: dict[str, Any] = {
        "bootstrap_servers": kafka.kafka_bootstrap,
        "security_protocol": kafka.kafka_security_protocol,
    }
    ctx = ssl_context(kafka)
    if ctx is not None:
        cfg["ssl_context"] = ctx
    if kafka.kafka_security_protocol.startswith("SASL_"):
        assert kafka.kafka_sasl_password is not None  # the settings' validator checks it
        cfg.update(
            sasl_mechanism=kafka.kafka_sasl_mechanism,
            sasl_plain_username=kafka.kafka_sasl_username,
            sasl_plain_password=kafka.kafka_sasl_password.get_secret_value(),
        )
    return cfg


def faust_config(kafka: KafkaSettings) -> dict[str, Any]:
    """``broker``, ``broker_credentials`` and the group session for ``faust.App``."""
    import faust

    brokers = [f"kafka://{host.strip()}" for host in kafka.kafka_bootstrap.split(",")]
    ctx = ssl_context(kafka)
    credentials = None
    if kafka.kafka_security_protocol.startswith("SASL_"):
        assert kafka.kafka_sasl_password is not None
        credentials = faust.SASLCredentials(
            username=kafka.kafka_sasl_username,
            password=kafka.kafka_sasl_password.get_secret_value(),
            ssl_context=ctx, mechanism=kafka.kafka_sasl_mechanism,
        )
    elif ctx is not None:
        credentials = faust.SSLCredentials(ctx)
    return {"broker": brokers, "broker_credentials": credentials,
            "broker_session_timeout": kafka.kafka_session_timeout_s,
            "broker_heartbeat_interval": kafka.kafka_session_timeout_s / 3,
            # the topics Faust creates (changelogs, the assignor's) are replicated like ours
            "topic_replication_factor": kafka.topic_replication}


async def start_reader(make: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Start the group-less consumer ``make()`` builds for named topics, and return it.

    In a cluster, brokers learn of a topic just created at different moments: aiokafka's start
    fails with UnknownTopicOrPartitionError when the broker it asks last does not list it yet.
    That is retried with a new consumer every 0.5 s until ``timeout``; then the error says which
    topics."""
    from aiokafka.errors import UnknownTopicOrPartitionError

    topics: list[str] = []

    async def start() -> Any:
        consumer = make()
        try:
            await consumer.start()
        except UnknownTopicOrPartitionError:
            await consumer.stop()
            topics[:] = sorted(consumer.subscription())
            raise
        return consumer

    try:
        return await retry(start, retry_on=UnknownTopicOrPartitionError,
                           backoff=Backoff(first_s=0.5, max_s=0.5), deadline_s=timeout)
    except UnknownTopicOrPartitionError as e:
        raise UnknownTopicOrPartitionError(
            f"topics {topics} not in the cluster's metadata after {timeout:.0f} s") from e


async def start_topic_reader(kafka: Kafka, topic: str,
                             isolation_level: str = "read_uncommitted") -> Any:
    """A started group-less consumer of every partition of ``topic``, from its start, committing
    nothing (what the compacted topics are read whole, then followed, with); ``read_committed``
    for a topic written in transactions."""
    from aiokafka import AIOKafkaConsumer

    return await start_reader(lambda: AIOKafkaConsumer(
        topic, **aiokafka_config(kafka), group_id=None, isolation_level=isolation_level,
        auto_offset_reset="earliest", enable_auto_commit=False))
