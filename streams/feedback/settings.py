"""Settings of the feedback service (``ipr feedback``): ``IPR_FEEDBACK_*`` and ``IPR_KAFKA_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from schemas.topics import ARTIFACT_FILES
from streams.kafka.settings import KafkaSettings


class FeedbackSettings(KafkaSettings):
    """The feedback service (``ipr feedback``): labels -> recalibration -> new versions."""

    model_config = SettingsConfigDict(
        env_prefix="IPR_FEEDBACK_", extra="ignore", populate_by_name=True
    )

    artifacts: Path = Field(
        Path("artifacts/zeroeval"),
        description="the version to start from (IPR_FEEDBACK_ARTIFACTS)",
    )
    versions_dir: Path = Field(
        Path("artifacts/versions"),
        description="where new versions are written (IPR_FEEDBACK_VERSIONS_DIR)",
    )
    app_id: str = Field(
        "ipr-feedback",
        description="Faust app id = consumer group (IPR_FEEDBACK_APP_ID)",
    )
    min_labels: int = Field(
        50,
        ge=1,
        description="new labels of a model that trigger its recalibration "
        "(IPR_FEEDBACK_MIN_LABELS)",
    )
    recal_interval_s: float = Field(
        600.0, gt=0,
        description="recalibrate a model with fewer than min_labels new labels once its last "
        "recalibration is this old (IPR_FEEDBACK_RECAL_INTERVAL_S)",
    )
    max_labels: int = Field(
        2000,
        ge=1,
        description="most recent labels per model kept and used (IPR_FEEDBACK_MAX_LABELS)",
    )
    label_half_life_s: float = Field(
        7 * 24 * 3600.0, gt=0,
        description="a label's weight in its model's correction halves with every this much age "
        "(IPR_FEEDBACK_LABEL_HALF_LIFE_S)",
    )
    graduate_labels: int = Field(
        100, ge=1,
        description="labels after which an onboarding model (ipr add-model --prices-only) is "
        "routed like any model; below, exploration alone sends it prompts "
        "(IPR_FEEDBACK_GRADUATE_LABELS)",
    )
    decision_retention_s: float = Field(
        3600.0,
        gt=0,
        description="how long a decision waits for its label (IPR_FEEDBACK_DECISION_RETENTION_S)",
    )
    label_wait_s: float = Field(
        5.0, ge=0,
        description="how long after it was produced a label may wait for its decision to be read "
        "before it is dead-lettered as unknown_prompt (IPR_FEEDBACK_LABEL_WAIT_S)",
    )
    min_publish_interval_s: float = Field(
        30.0, ge=0,
        description="publish a new version at most this often; labels arriving sooner wait "
        "for the next one (IPR_FEEDBACK_MIN_PUBLISH_INTERVAL_S)",
    )
    keep_versions: int = Field(
        5, ge=2,
        description="versions kept in versions_dir; older ones are removed, never the one "
        "served or its parent (IPR_FEEDBACK_KEEP_VERSIONS)",
    )
    metrics_port: int | None = Field(
        None, description="serve Prometheus /metrics on this port (IPR_FEEDBACK_METRICS_PORT)"
    )
    metrics_bind: str = Field(
        "127.0.0.1", description="the address /metrics is served on (IPR_FEEDBACK_METRICS_BIND)")
    data_dir: Path = Field(Path("build/faust-feedback"),
                           description="Faust state dir (IPR_FEEDBACK_DATA_DIR)")
    artifacts_topic: str = Field(
        ARTIFACT_FILES, validation_alias=AliasChoices("IPR_ARTIFACTS_TOPIC"),
        description="the compacted topic each new version's changed files are published on, "
        "for routers that cannot read versions_dir (IPR_ARTIFACTS_TOPIC)",
    )
