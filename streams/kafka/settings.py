"""One settings class per service, read from the environment with the ``IPR_`` prefix.

Faust would read unprefixed variables such as ``BROKER_URL`` by itself; every value it needs is
passed to ``faust.App`` explicitly from here instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.topics import (
    FEEDBACK_QUALITY,
    PROMPTS_DLQ,
    PROMPTS_IN,
    RESPONSES_OUT,
    ROUTER_CONTROL,
    ROUTER_DECISIONS,
)


def _env(name: str) -> AliasChoices:
    """Shared Kafka settings keep their ``IPR_`` name whatever the service's own prefix."""
    return AliasChoices(name, f"IPR_{name.upper()}")


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
    prompts_in: str = Field(PROMPTS_IN, validation_alias=_env("prompts_in"), description="IPR_PROMPTS_IN")
    prompts_dlq: str = Field(PROMPTS_DLQ, validation_alias=_env("prompts_dlq"), description="IPR_PROMPTS_DLQ")
    decisions: str = Field(ROUTER_DECISIONS, validation_alias=_env("decisions"), description="IPR_DECISIONS")
    responses: str = Field(RESPONSES_OUT, validation_alias=_env("responses"), description="IPR_RESPONSES")
    feedback: str = Field(FEEDBACK_QUALITY, validation_alias=_env("feedback"), description="IPR_FEEDBACK")
    control: str = Field(ROUTER_CONTROL, validation_alias=_env("control"), description="IPR_CONTROL")


class RouterSettings(KafkaSettings):
    """The router service (``ipr router``)."""

    model_config = SettingsConfigDict(env_prefix="IPR_ROUTER_", extra="ignore", populate_by_name=True)

    artifacts: Path = Field(Path("artifacts/zeroeval"), description="IPR_ROUTER_ARTIFACTS")
    app_id: str = Field("ipr-router", description="Faust app id = consumer group (IPR_ROUTER_APP_ID)")
    default_tolerance: float = Field(0.2, ge=0, le=1, description="IPR_ROUTER_DEFAULT_TOLERANCE")
    variant: Literal["ipr", "dynamic_max"] = Field("ipr", description="IPR_ROUTER_VARIANT")
    delta: float = Field(0.0, ge=0, description="margin of the dynamic_max variant (IPR_ROUTER_DELTA)")
    # Small batches, short wait: the encoder runs per text, so a bigger batch gains little
    # throughput and makes its first prompt wait for the last (make bench, README "Speed").
    batch_size: int = Field(4, ge=1, description="max events per micro-batch (IPR_ROUTER_BATCH_SIZE)")
    batch_timeout_ms: float = Field(
        3.0, gt=0, description="max wait to fill a micro-batch (IPR_ROUTER_BATCH_TIMEOUT_MS)"
    )
    web_port: int = Field(6066, description="Faust web port, serves /metrics (IPR_ROUTER_WEB_PORT)")
    web_bind: str = Field("127.0.0.1", description="Faust web bind address (IPR_ROUTER_WEB_BIND)")
    web_enabled: bool = Field(True, description="IPR_ROUTER_WEB_ENABLED")
    data_dir: Path = Field(Path("build/faust"), description="Faust state dir (IPR_ROUTER_DATA_DIR)")
    encoder_threads: int | None = Field(None, description="onnxruntime threads (IPR_ROUTER_ENCODER_THREADS)")


class WorkerSettings(KafkaSettings):
    """LLM workers (``ipr worker``)."""

    model_config = SettingsConfigDict(env_prefix="IPR_WORKER_", extra="ignore", populate_by_name=True)

    group_prefix: str = Field("ipr-worker", description="consumer group = prefix.<model> (IPR_WORKER_GROUP_PREFIX)")
    backend: Literal["openai", "replay"] = Field("openai", description="IPR_WORKER_BACKEND")
    openai_base_url: str = Field("http://127.0.0.1:8000/v1", description="IPR_WORKER_OPENAI_BASE_URL")
    openai_api_key: SecretStr = Field(SecretStr(""), description="IPR_WORKER_OPENAI_API_KEY")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout (IPR_WORKER_TIMEOUT_S)")
    max_retries: int = Field(3, ge=0, description="IPR_WORKER_MAX_RETRIES")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay, doubled each time (IPR_WORKER_BACKOFF_S)")
    max_tokens: int = Field(1024, ge=1, description="IPR_WORKER_MAX_TOKENS")
    concurrency: int = Field(16, ge=1, description="calls in flight per model (IPR_WORKER_CONCURRENCY)")
    replay_dataset: Path | None = Field(None, description="dataset folder for the replay backend (IPR_WORKER_REPLAY_DATASET)")
    replay_degrade: str | None = Field(
        None,
        description="MODEL|TASK|MARKER: the replay backend reports quality 0 for MODEL on TASK "
        "prompts whose id contains MARKER (the drift scenario) (IPR_WORKER_REPLAY_DEGRADE)",
    )
    dedupe_size: int = Field(100_000, ge=0, description="answered prompt_ids remembered per model, per process (IPR_WORKER_DEDUPE_SIZE)")
    metrics_port: int | None = Field(None, description="serve Prometheus /metrics on this port (IPR_WORKER_METRICS_PORT)")
    drain_timeout_s: float = Field(30.0, ge=0, description="on stop, wait this long for calls in flight (IPR_WORKER_DRAIN_TIMEOUT_S)")
    unhealthy_after: int = Field(
        5, ge=0,
        description="report a model unhealthy on the control topic after this many error "
        "responses in a row; 0: never (IPR_WORKER_UNHEALTHY_AFTER)",
    )
    health_ttl_s: float = Field(
        60.0, gt=0, le=86_400,
        description="how long routers leave an unhealthy model out, unless it is reported again "
        "(IPR_WORKER_HEALTH_TTL_S)",
    )


class FeedbackSettings(KafkaSettings):
    """The feedback service (``ipr feedback``): labels -> recalibration -> new versions."""

    model_config = SettingsConfigDict(env_prefix="IPR_FEEDBACK_", extra="ignore", populate_by_name=True)

    artifacts: Path = Field(Path("artifacts/zeroeval"), description="the version to start from (IPR_FEEDBACK_ARTIFACTS)")
    versions_dir: Path = Field(Path("artifacts/versions"), description="where new versions are written (IPR_FEEDBACK_VERSIONS_DIR)")
    app_id: str = Field("ipr-feedback", description="Faust app id = consumer group (IPR_FEEDBACK_APP_ID)")
    min_labels: int = Field(50, ge=1, description="new labels of a model that trigger its recalibration (IPR_FEEDBACK_MIN_LABELS)")
    recal_interval_s: float = Field(
        600.0, gt=0,
        description="recalibrate a model with fewer than min_labels new labels once its last "
        "recalibration is this old (IPR_FEEDBACK_RECAL_INTERVAL_S)",
    )
    max_labels: int = Field(2000, ge=1, description="most recent labels per model kept and used (IPR_FEEDBACK_MAX_LABELS)")
    label_half_life_s: float = Field(
        7 * 24 * 3600.0, gt=0,
        description="a label's weight in its model's correction halves with every this much age "
        "(IPR_FEEDBACK_LABEL_HALF_LIFE_S)",
    )
    decision_retention_s: float = Field(3600.0, gt=0, description="how long a decision waits for its label (IPR_FEEDBACK_DECISION_RETENTION_S)")
    label_wait_s: float = Field(
        5.0, ge=0,
        description="how long after it was produced a label may wait for its decision to be read "
        "before it is dead-lettered as unknown_prompt (IPR_FEEDBACK_LABEL_WAIT_S)",
    )
    data_dir: Path = Field(Path("build/faust-feedback"), description="IPR_FEEDBACK_DATA_DIR")
