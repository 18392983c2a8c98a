"""Settings of the LLM workers (``ipr worker``): ``IPR_WORKER_*`` and ``IPR_KAFKA_*``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from streams.kafka.settings import KafkaSettings


class WorkerSettings(KafkaSettings):
    """LLM workers (``ipr worker``)."""

    model_config = SettingsConfigDict(
        env_prefix="IPR_WORKER_", extra="ignore", populate_by_name=True
    )

    group_prefix: str = Field(
        "ipr-worker",
        description="consumer group = prefix.<model> (IPR_WORKER_GROUP_PREFIX)",
    )
    backend: Literal["openai", "replay"] = Field(
        "openai", description="openai: an OpenAI-compatible endpoint; replay: a dataset's "
        "recorded outcomes (--backend; IPR_WORKER_BACKEND)")
    known_models: list[str] | None = Field(
        None,
        description="the model ids an openai worker may serve when it is given no artifacts "
        "(JSON list; their cost is then 0; IPR_WORKER_KNOWN_MODELS)",
    )
    openai_base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description="the openai backend's endpoint (IPR_WORKER_OPENAI_BASE_URL)",
    )
    openai_api_key: SecretStr = Field(
        SecretStr(""), description="the openai backend's key (IPR_WORKER_OPENAI_API_KEY)")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout (IPR_WORKER_TIMEOUT_S)")
    max_retries: int = Field(
        3, ge=0,
        description="retries of a call after 429, 5xx and network errors (IPR_WORKER_MAX_RETRIES)")
    backoff_s: float = Field(
        0.5,
        ge=0,
        description="first retry delay, doubled each time (IPR_WORKER_BACKOFF_S)",
    )
    max_tokens: int = Field(
        1024, ge=1, description="output tokens asked for when a request names none "
        "(IPR_WORKER_MAX_TOKENS)")
    max_tokens_cap: int = Field(
        16_384, ge=1, description="the most output tokens a request may ask for: one asking for "
        "more is dead-lettered as max_tokens_above_cap (IPR_WORKER_MAX_TOKENS_CAP)")
    concurrency: int = Field(
        16,
        ge=1,
        description="calls in flight per model (IPR_WORKER_CONCURRENCY)",
    )
    replay_dataset: Path | None = Field(
        None,
        description="dataset folder for the replay backend (IPR_WORKER_REPLAY_DATASET)",
    )
    dedupe_size: int = Field(
        100_000,
        ge=0,
        description="answered prompt_ids a worker process remembers, read back from the "
        "answered topic at start; 0: no deduplication (IPR_WORKER_DEDUPE_SIZE)",
    )
    answered_topic: str | None = Field(
        None,
        description="the compacted topic of answered prompt ids shared by the workers; default "
        "<group_prefix>.answered (IPR_WORKER_ANSWERED_TOPIC)",
    )
    metrics_port: int | None = Field(
        None,
        description="serve Prometheus /metrics on this port (IPR_WORKER_METRICS_PORT)",
    )
    start_timeout_s: float = Field(
        120.0, ge=0,
        description="how long a starting worker retries a broker that does not answer "
        "(IPR_WORKER_START_TIMEOUT_S)",
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="on stop, wait this long for calls in flight (IPR_WORKER_DRAIN_TIMEOUT_S)",
    )
    failover_attempts: int = Field(
        3, ge=1, le=64,
        description="models a prompt may try in all: after a retryable failure (timeouts, 429, "
        "5xx, after max_retries) a worker forwards it to the next model of its ranking; 1: no "
        "failover (IPR_WORKER_FAILOVER_ATTEMPTS)",
    )
    unhealthy_after: int = Field(
        5, ge=0,
        description="report a model unhealthy on the control topic after this many error "
        "responses in a row; 0: never (IPR_WORKER_UNHEALTHY_AFTER)",
    )
    serving_ttl_s: float = Field(
        30.0, gt=0, le=3_600,
        description="how long an announcement of the models this worker serves holds on the "
        "control topic (renewed every third of it); routers leave a model out once no live "
        "worker announces it (IPR_WORKER_SERVING_TTL_S)",
    )
    health_ttl_s: float = Field(
        60.0, gt=0, le=86_400,
        description="how long routers leave an unhealthy model out, unless it is reported again "
        "(IPR_WORKER_HEALTH_TTL_S)",
    )
    stream_flush_ms: float = Field(
        20.0, ge=0, le=5_000,
        description="a streamed answer's pieces are sent to the gateway in batches: the first "
        "at once (the time to first token), the rest at most this often, so Kafka is not asked "
        "for a record per token (IPR_WORKER_STREAM_FLUSH_MS)",
    )
