"""The Kafka settings every service shares: bootstrap servers, partitions, topic names.

Each service has one settings class of its own (``streams.router.settings``,
``streams.worker.settings``, ``streams.feedback.settings``), read from the environment with the
``IPR_`` prefix when the command line builds it, never at import. Faust would read unprefixed
variables such as ``BROKER_URL`` by itself; every value it needs is passed to ``faust.App``
explicitly instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import (
    FEEDBACK_QUALITY,
    PROMPTS_DLQ,
    PROMPTS_IN,
    RESPONSES_OUT,
    ROUTER_CONTROL,
    ROUTER_DECISIONS,
    ROUTER_POLICIES,
    ROUTER_RESERVATIONS,
    ROUTER_SHADOW,
    ROUTER_SPEND,
    TOOL_CALLS,
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
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias=_env("kafka_security_protocol"),
        description="how every client connects (IPR_KAFKA_SECURITY_PROTOCOL)",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", validation_alias=_env("kafka_sasl_mechanism"),
        description="with SASL_*: the mechanism (IPR_KAFKA_SASL_MECHANISM)",
    )
    kafka_sasl_username: str | None = Field(
        None, validation_alias=_env("kafka_sasl_username"),
        description="with SASL_* (IPR_KAFKA_SASL_USERNAME)",
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, validation_alias=_env("kafka_sasl_password"),
        description="with SASL_* (IPR_KAFKA_SASL_PASSWORD)",
    )
    kafka_ssl_cafile: Path | None = Field(
        None, validation_alias=_env("kafka_ssl_cafile"),
        description="with SSL or SASL_SSL: the CA bundle that signed the brokers' certificates; "
        "default: the system's (IPR_KAFKA_SSL_CAFILE)",
    )
    kafka_ssl_certfile: Path | None = Field(
        None, validation_alias=_env("kafka_ssl_certfile"),
        description="a client certificate, for brokers that require one (IPR_KAFKA_SSL_CERTFILE)",
    )
    kafka_ssl_keyfile: Path | None = Field(
        None, validation_alias=_env("kafka_ssl_keyfile"),
        description="the client certificate's key (IPR_KAFKA_SSL_KEYFILE)",
    )
    topic_partitions: int = Field(
        4, ge=1, validation_alias=_env("topic_partitions"),
        description="partitions of the topics the project creates (IPR_TOPIC_PARTITIONS)",
    )
    topic_replication: int = Field(
        1, ge=1, validation_alias=_env("topic_replication"),
        description="replication factor of the topics the project creates "
        "(IPR_TOPIC_REPLICATION; 3 on a production cluster)",
    )
    kafka_session_timeout_s: float = Field(
        10.0, ge=6, le=300, validation_alias=_env("kafka_session_timeout_s"),
        description="how long a consumer group waits for a member that stopped answering (a "
        "killed process) before its partitions move: what a restart after a crash waits "
        "(IPR_KAFKA_SESSION_TIMEOUT_S; the broker allows 6 to 300 by default)",
    )
    kafka_lag_interval_s: float = Field(
        15.0, ge=0, validation_alias=_env("kafka_lag_interval_s"),
        description="how often a service measures its consumer groups' lag for /metrics "
        "(ipr_kafka_consumer_lag_records; IPR_KAFKA_LAG_INTERVAL_S, 0: never)",
    )
    prompts_in: str = Field(
        PROMPTS_IN,
        validation_alias=_env("prompts_in"),
        description="the prompts to route (IPR_PROMPTS_IN)",
    )
    prompts_dlq: str = Field(
        PROMPTS_DLQ,
        validation_alias=_env("prompts_dlq"),
        description="prompts that could not be routed, with the reason (IPR_PROMPTS_DLQ)",
    )
    decisions: str = Field(
        ROUTER_DECISIONS,
        validation_alias=_env("decisions"),
        description="the routing decisions, for audit and feedback (IPR_DECISIONS)",
    )
    responses: str = Field(
        RESPONSES_OUT,
        validation_alias=_env("responses"),
        description="the models' answers (IPR_RESPONSES)",
    )
    feedback: str = Field(
        FEEDBACK_QUALITY,
        validation_alias=_env("feedback"),
        description="quality labels (IPR_FEEDBACK)",
    )
    control: str = Field(
        ROUTER_CONTROL,
        validation_alias=_env("control"),
        description="model updates and model health (IPR_CONTROL)",
    )
    shadow: str = Field(
        ROUTER_SHADOW,
        validation_alias=_env("shadow"),
        description="the shadow version's decisions (IPR_SHADOW)",
    )
    policies: str = Field(
        ROUTER_POLICIES,
        validation_alias=_env("policies"),
        description="the tenants' policies, compacted (IPR_POLICIES)",
    )
    spend: str = Field(
        ROUTER_SPEND,
        validation_alias=_env("spend"),
        description="the tenants' spend per period, compacted (IPR_SPEND)",
    )
    reservations: str = Field(
        ROUTER_RESERVATIONS,
        validation_alias=_env("reservations"),
        description="what the routers reserved of the tenants' budgets for the prompts in "
        "flight, per period, compacted (IPR_RESERVATIONS)",
    )
    tool_calls: str = Field(
        TOOL_CALLS,
        validation_alias=_env("tool_calls"),
        description="which model made each tool call, compacted, a day: a tool loop stays on "
        "that model (IPR_TOOL_CALLS)",
    )

    @property
    def given_bootstrap(self) -> str | None:
        """The bootstrap servers when given (IPR_KAFKA_BOOTSTRAP, non-empty, or by code): an
        existing cluster; None when the default stands (the lab starts a local broker then)."""
        given = "kafka_bootstrap" in self.model_fields_set
        return self.kafka_bootstrap if given and self.kafka_bootstrap else None

    @model_validator(mode="after")
    def _credentials_fit_the_protocol(self) -> Self:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            raise ValueError(f"IPR_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                             "IPR_KAFKA_SASL_USERNAME and IPR_KAFKA_SASL_PASSWORD")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("IPR_KAFKA_SSL_CERTFILE and IPR_KAFKA_SSL_KEYFILE go together")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"IPR_{name.upper()}: no file at {path}")
        return self
