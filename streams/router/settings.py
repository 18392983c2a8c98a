"""Settings of the router service (``ipr router``): ``IPR_ROUTER_*`` and ``IPR_KAFKA_*``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from ipr_model.serving.views import DEFAULT_VIEW, View
from schemas.topics import ARTIFACT_FILES
from streams.kafka.settings import KafkaSettings


class RouterSettings(KafkaSettings):
    """The router service (``ipr router``)."""

    model_config = SettingsConfigDict(
        env_prefix="IPR_ROUTER_", extra="ignore", populate_by_name=True
    )

    artifacts: Path = Field(Path("artifacts/zeroeval"),
                             description="the version served at start (--artifacts; "
                             "IPR_ROUTER_ARTIFACTS)")
    app_id: str = Field(
        "ipr-router",
        description="Faust app id = consumer group (IPR_ROUTER_APP_ID)",
    )
    default_tolerance: float = Field(
        0.2, ge=0, le=1,
        description="tau of requests without one (--tolerance; IPR_ROUTER_DEFAULT_TOLERANCE)")
    variant: Literal["ipr", "range", "dynamic_max"] = Field(
        "ipr", description="the rule (docs/design.md): ipr, range or dynamic_max "
        "(IPR_ROUTER_VARIANT)")
    delta: float = Field(
        0.0,
        ge=0,
        description="margin of the dynamic_max variant (IPR_ROUTER_DELTA)",
    )
    served_only: bool = Field(
        True, description="route only among the models some live worker announces on the "
        "control topic (streams.control.serving); false: among every model of the artifacts "
        "(IPR_ROUTER_SERVED_ONLY)")
    scored_view: View = Field(
        DEFAULT_VIEW, description="what of a chat request the estimators score: last_user (the "
        "newest user message: the single-turn prompts they were trained on), last_message, or "
        "system_and_last_user (ipr_model.serving.views) (IPR_ROUTER_SCORED_VIEW)")
    tool_call_wait_s: float = Field(
        2.0, ge=0, description="how long a batch holding a tool result waits for the record of "
        "its call to be read, before routing it as a new turn (IPR_ROUTER_TOOL_CALL_WAIT_S)")
    explore_share: float = Field(
        0.0, ge=0, le=1,
        description="share of prompts (by a hash of prompt_id) sent to an onboarding model, "
        "else to the model feedback lowered most for the prompt, to learn from their labels; "
        "0: none (IPR_ROUTER_EXPLORE_SHARE)")
    # Small batches, short wait: a batch's prompts are answered when its last one is scored, so
    # bigger batches trade latency for throughput (16 against 4: end-to-end / limit 0.72-0.75
    # against 0.62-0.64, p50 at half load 57-64 against 32-45 ms; docs/measurements.md, "Speed").
    batch_size: int = Field(
        4,
        ge=1,
        description="max events per micro-batch (IPR_ROUTER_BATCH_SIZE)",
    )
    batch_timeout_ms: float = Field(
        3.0, gt=0, description="max wait to fill a micro-batch (IPR_ROUTER_BATCH_TIMEOUT_MS)"
    )
    web_port: int = Field(6066, description="Faust web port, serves /metrics (IPR_ROUTER_WEB_PORT)")
    web_bind: str = Field("127.0.0.1", description="Faust web bind address (IPR_ROUTER_WEB_BIND)")
    web_enabled: bool = Field(True, description="serve /metrics (IPR_ROUTER_WEB_ENABLED)")
    data_dir: Path = Field(Path("build/faust"), description="Faust state dir (IPR_ROUTER_DATA_DIR)")
    encoder_threads: int | None = Field(
        None,
        description="onnxruntime threads; unset: every core (a batch's texts run side by side, one "
        "core each) (IPR_ROUTER_ENCODER_THREADS)",
    )
    versions_from: Literal["auto", "filesystem", "kafka"] = Field(
        "auto",
        description="where announced artifact versions are loaded from: auto (the announced "
        "location when this host can read it, else the artifact-files topic), filesystem (the "
        "location only), kafka (the topic only) (IPR_ROUTER_VERSIONS_FROM)",
    )
    versions_dir: Path = Field(
        Path("artifacts/received"),
        description="where versions received from the artifact-files topic are written "
        "(IPR_ROUTER_VERSIONS_DIR)",
    )
    keep_versions: int = Field(
        3, ge=1,
        description="received versions kept in versions_dir, besides the one served "
        "(IPR_ROUTER_KEEP_VERSIONS)",
    )
    commit_interval_s: float = Field(
        1.0, gt=0,
        description="how often the consumed offsets of acknowledged batches are committed, "
        "at-least-once: a crash routes again what came since (IPR_ROUTER_COMMIT_INTERVAL_S)",
    )
    exactly_once: bool = Field(
        False,
        description="commit each batch's outputs and its input offsets in one Kafka transaction "
        "per partition of prompts.in: after a crash, read_committed consumers see every "
        "output once (IPR_ROUTER_EXACTLY_ONCE)",
    )
    transaction_interval_ms: float = Field(
        50.0, ge=0,
        description="exactly-once: a partition's transactions start at most this often; what "
        "is routed meanwhile joins the next (IPR_ROUTER_TRANSACTION_INTERVAL_MS)",
    )
    max_uncommitted_batches: int = Field(
        32, ge=1,
        description="exactly-once: batches routed and not yet committed, at most; the batches "
        "routed while a transaction commits share the next one "
        "(IPR_ROUTER_MAX_UNCOMMITTED_BATCHES)",
    )
    reserve_budgets: bool = Field(
        True,
        description="hold a budgeted tenant's prompts in flight against its budget: each reserves "
        "its model's estimated cost when routed, until its answer settles it; false: a budget "
        "sees only the answers' cost, and overshoots by what is in flight "
        "(IPR_ROUTER_RESERVE_BUDGETS)",
    )
    artifacts_topic: str = Field(
        ARTIFACT_FILES, validation_alias=AliasChoices("IPR_ARTIFACTS_TOPIC"),
        description="the compacted topic of each version's changed files (IPR_ARTIFACTS_TOPIC)",
    )
