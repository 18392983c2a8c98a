"""The Kafka settings every service shares: bootstrap servers, partitions, topic names.

Each service has one settings class of its own (``streams.router.settings``,
``streams.worker.settings``, ``streams.feedback.settings``), read from the environment with the
``IPR_`` prefix when the command line builds it, never at import. Faust would read unprefixed
variables such as ``BROKER_URL`` by itself; every value it needs is passed to ``faust.App``
explicitly instead.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import (
    FEEDBACK_QUALITY,
    PROMPTS_DLQ,
    PROMPTS_IN,
    RESPONSES_OUT,
    ROUTER_CONTROL,
    ROUTER_DECISIONS,
)


def _env(name: str) -> AliasChoices:
    """Shared Kafka settings keep their ``IPR_`` name whatever the service's own prefix (and
    only that name: ``populate_by_name`` lets code pass the field's own name)."""
    return AliasChoices(f"IPR_{name.upper()}")


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IPR_", extra="ignore", populate_by_name=True)

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", validation_alias=_env("kafka_bootstrap"),
        description="Kafka bootstrap servers (IPR_KAFKA_BOOTSTRAP)",
    )
    topic_partitions: int = Field(
        4, ge=1, validation_alias=_env("topic_partitions"),
        description="partitions of the topics the project creates (IPR_TOPIC_PARTITIONS)",
    )
    prompts_in: str = Field(
        PROMPTS_IN,
        validation_alias=_env("prompts_in"),
        description="IPR_PROMPTS_IN",
    )
    prompts_dlq: str = Field(
        PROMPTS_DLQ,
        validation_alias=_env("prompts_dlq"),
        description="IPR_PROMPTS_DLQ",
    )
    decisions: str = Field(
        ROUTER_DECISIONS,
        validation_alias=_env("decisions"),
        description="IPR_DECISIONS",
    )
    responses: str = Field(
        RESPONSES_OUT,
        validation_alias=_env("responses"),
        description="IPR_RESPONSES",
    )
    feedback: str = Field(
        FEEDBACK_QUALITY,
        validation_alias=_env("feedback"),
        description="IPR_FEEDBACK",
    )
    control: str = Field(
        ROUTER_CONTROL,
        validation_alias=_env("control"),
        description="IPR_CONTROL",
    )
