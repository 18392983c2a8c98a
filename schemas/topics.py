"""Kafka topic names and keys of the event contracts (docs/design.md, "Topics and events").

Names only: no Faust, no connection. :func:`safe_name` is the one home of the model id -> topic
(and artifact folder) name rule.
"""

from __future__ import annotations

import re

PROMPTS_IN = "prompts.in"
PROMPTS_DLQ = "prompts.dlq"
ROUTER_DECISIONS = "router.decisions"
RESPONSES_OUT = "responses.out"
FEEDBACK_QUALITY = "feedback.quality"
ROUTER_CONTROL = "router.control"
ROUTED_PREFIX = "prompts.routed."
# Compacted: the changed files of each artifact version, for routers that share no filesystem
# with the feedback service. Key: file_chunk_key; value: that chunk's bytes (None: retired).
ARTIFACT_FILES = "router.artifacts"
# The decisions of a candidate artifact version scoring in shadow (RoutingDecision, key
# prompt_id): nothing is routed by them.
ROUTER_SHADOW = "router.shadow"
# Compacted, one partition: each tenant's TenantPolicy, key = the tenant (None: removed).
ROUTER_POLICIES = "router.policies"
# Compacted (and deleted after two months): TenantSpend records, key = spend_key(...).
ROUTER_SPEND = "router.spend"
# Compacted (and deleted after two months): TenantReservation records, key = spend_key(...).
ROUTER_RESERVATIONS = "router.reservations"
TOOL_CALLS = "router.tool_calls"  # compacted: tool call id -> the model that made the call

# The record header that names the event of a reply channel's record (a gateway.replies.* topic
# carries StreamChunk and ModelResponse records): value b"StreamChunk" for a chunk; no header, an
# answer.
EVENT_HEADER = "ipr-event"

CONTROL_KEY = "artifacts"  # the key of every ModelUpdate on ROUTER_CONTROL
HEALTH_KEY_PREFIX = "health:"  # ModelHealth on ROUTER_CONTROL: key health:<model_id>
# On ROUTER_CONTROL: a ModelUpdate naming the version to score in shadow; a tombstone stops it.
SHADOW_KEY = "shadow"
SERVING_KEY_PREFIX = "serving:"  # WorkerServing on ROUTER_CONTROL: key serving:<worker>

ALL_FIXED = (
    PROMPTS_IN, PROMPTS_DLQ, ROUTER_DECISIONS, RESPONSES_OUT, FEEDBACK_QUALITY, ROUTER_CONTROL,
    ARTIFACT_FILES, ROUTER_SHADOW, ROUTER_POLICIES, ROUTER_SPEND,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_TOPIC_CHARS = 249  # Kafka's limit


def safe_name(model_id: str) -> str:
    """A model id as a topic or file name: every character outside [A-Za-z0-9._-] becomes '_'."""
    return _UNSAFE.sub("_", model_id)


def model_topic(model_id: str) -> str:
    """`prompts.routed.<safe_name(model_id)>`.

    Distinct ids can share a topic ("a/b" and "a:b" both map to "prompts.routed.a_b"); the
    worker of a topic checks `model_id` in each RoutedPrompt.
    """
    if not model_id:
        raise ValueError("model_id must not be empty")
    topic = ROUTED_PREFIX + safe_name(model_id)
    if len(topic) > _MAX_TOPIC_CHARS:
        raise ValueError(
            f"topic for model_id {model_id!r} has {len(topic)} chars,"
            f" Kafka allows {_MAX_TOPIC_CHARS}"
        )
    return topic


def health_key(model_id: str) -> bytes:
    """The control-topic key of a model's health reports."""
    return (HEALTH_KEY_PREFIX + model_id).encode()


def is_health_key(key: bytes | None) -> bool:
    return (key or b"").startswith(HEALTH_KEY_PREFIX.encode())


def serving_key(worker: str) -> bytes:
    """The control-topic key of a worker's announcements of what it serves."""
    return (SERVING_KEY_PREFIX + worker).encode()


def is_serving_key(key: bytes | None) -> bool:
    return (key or b"").startswith(SERVING_KEY_PREFIX.encode())


_CHUNK_KEY = re.compile(r"([0-9a-f]{64}):(\d+)/(\d+)")


def file_chunk_key(sha256: str, index: int, count: int) -> bytes:
    """The ARTIFACT_FILES key of chunk ``index`` of ``count`` of the file whose content has
    this sha256 (a manifest's files and the manifest itself are addressed by content)."""
    return f"{sha256}:{index}/{count}".encode()


def parse_file_chunk_key(key: bytes | None) -> tuple[str, int, int] | None:
    """(sha256, index, count) of an ARTIFACT_FILES key, None for any other key."""
    m = _CHUNK_KEY.fullmatch((key or b"").decode("ascii", "replace"))
    if m is None or not int(m[2]) < int(m[3]):
        return None
    return m[1], int(m[2]), int(m[3])


def spend_key(tenant: str, period: str, period_start: float, partition: int) -> bytes:
    """The ROUTER_SPEND key of one responses.out partition's count of a tenant's spend in one
    period, and the ROUTER_RESERVATIONS key of one prompts.in partition's count of its
    reservations (the tenant last: it may hold any character)."""
    return f"{period}:{int(period_start)}:{partition}:{tenant}".encode()
