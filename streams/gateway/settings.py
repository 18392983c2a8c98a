"""Settings of the gateway (``ipr gateway``): ``IPR_GATEWAY_*`` on top of ``IPR_KAFKA_*``."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from schemas import limits as L
from schemas.topics import safe_name
from streams.kafka.settings import KafkaSettings

REPLY_PREFIX = "gateway.replies."


def _instance() -> str:
    return safe_name(f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")[:100]


class GatewaySettings(KafkaSettings):
    """The OpenAI-compatible HTTP front door (``ipr gateway``)."""

    model_config = SettingsConfigDict(
        env_prefix="IPR_GATEWAY_", extra="ignore", populate_by_name=True
    )

    host: str = Field("127.0.0.1", description="address to listen on (IPR_GATEWAY_HOST)")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on (not 8000: the "
                      "workers' default model endpoint, vLLM's) (IPR_GATEWAY_PORT)")
    alias: str = Field(
        "ipr", pattern=r"^[A-Za-z][A-Za-z0-9_.]*$",
        description="the model name that routes among all models; '<alias>-<tau>' sets the "
        "tolerance (IPR_GATEWAY_ALIAS)")
    instance_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="names this gateway's reply topic, gateway.replies.<instance_id>; unset: "
        "the host, the pid and a random suffix (IPR_GATEWAY_INSTANCE_ID)")
    request_timeout_s: float = Field(
        120.0, gt=0, description="how long a request waits for its answer before a 504 "
        "(IPR_GATEWAY_REQUEST_TIMEOUT_S)")
    max_body_bytes: int = Field(
        L.MAX_EVENT_BYTES, ge=1024, description="largest request body accepted; larger: 413 "
        "(IPR_GATEWAY_MAX_BODY_BYTES)")
    keys_file: Path | None = Field(
        None, description="API keys (their sha256) and their tenants, written by "
        "`ipr gateway add-key`; unset: no key asked, no tenant (IPR_GATEWAY_KEYS_FILE)")
    artifacts: Path = Field(
        Path("artifacts/zeroeval"), description="the artifacts whose models /v1/models lists and "
        "a request may name (IPR_GATEWAY_ARTIFACTS)")
    reply_retention_ms: int = Field(
        3_600_000, ge=60_000, description="retention of the reply topic "
        "(IPR_GATEWAY_REPLY_RETENTION_MS)")
    remember: int = Field(
        10_000, ge=1, description="answered prompts remembered (their answers kept in memory), "
        "for feedback and Idempotency-Key retries (IPR_GATEWAY_REMEMBER)")

    @model_validator(mode="after")
    def _named(self) -> Self:
        if self.instance_id is None:
            self.instance_id = _instance()
        return self

    @property
    def reply_topic(self) -> str:
        return f"{REPLY_PREFIX}{self.instance_id}"
