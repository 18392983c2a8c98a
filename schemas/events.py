"""The event contracts: one pydantic model per Kafka event (docs/design.md, "Topics and events").

Every event rejects unknown fields, bounds every string, list and map (limits in
`schemas.limits`), refuses NaN and infinities, and carries `schema_version`. Timestamps are epoch
seconds as floats.

Numbers must be JSON numbers: a string ("0.5") or a boolean is refused wherever a number is
expected, as the JSON Schemas say. A float field takes an integer (`1` for 1.0); an integer field
takes an integral float (`5.0`, which JSON Schema counts as an integer) but not `5.5`. Booleans must
be `true` or `false`. Integer fields stay in the signed 64-bit range that orjson can write back (a
larger integer as a metadata value is kept as a float).
"""

from __future__ import annotations

import base64
import codecs
import time
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticKnownError

from schemas import limits as L

# A string with at least one non-whitespace character (`pattern` is searched, not anchored).
_NON_BLANK = r"\S"

PromptId = Annotated[
    str, StringConstraints(min_length=1, max_length=L.MAX_ID_CHARS, pattern=_NON_BLANK)
]
ModelId = Annotated[
    str, StringConstraints(min_length=1, max_length=L.MAX_ID_CHARS, pattern=_NON_BLANK)
]
Tenant = Annotated[
    str, StringConstraints(min_length=1, max_length=L.MAX_ID_CHARS, pattern=_NON_BLANK)
]
Label = Annotated[
    str, StringConstraints(min_length=1, max_length=L.MAX_LABEL_CHARS, pattern=_NON_BLANK)
]
PromptText = Annotated[
    str, StringConstraints(min_length=1, max_length=L.MAX_TEXT_CHARS, pattern=_NON_BLANK)
]
ErrorText = Annotated[str, StringConstraints(min_length=1, max_length=L.MAX_ERROR_CHARS)]

# A JSON number; an integer is fine, a string or a boolean is not (strict float: checked in Rust).
Number = Annotated[float, Strict()]
Probability = Annotated[Number, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[Number, Field(ge=0.0)]
Timestamp = Annotated[Number, Field(ge=0.0, description="epoch seconds")]


def _json_integer(value: object) -> object:
    """Refuse what lax int validation would coerce from other JSON types ("5", true); take an
    integral float (5.0, 1e30) as the integer it is, for the bounds to judge."""
    if isinstance(value, (str, bytes, bytearray, bool)):
        raise PydanticKnownError("int_type")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A JSON integer, or an integral float (5.0); not a string, a boolean or 5.5. Strict int would
# refuse 5.0, which the JSON Schema type "integer" allows; the check runs before a lax int.
Count = Annotated[int, Field(ge=0, le=L.MAX_INT), BeforeValidator(_json_integer)]
ModelList = Annotated[list[ModelId], Field(min_length=1, max_length=L.MAX_MODELS)]

MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=L.MAX_METADATA_KEY_CHARS)]
MetadataValue = (
    StrictBool
    | Annotated[StrictInt, Field(ge=L.MIN_INT, le=L.MAX_INT)]
    | StrictFloat
    | Annotated[str, StringConstraints(max_length=L.MAX_METADATA_VALUE_CHARS)]
)
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=L.MAX_METADATA_KEYS)]
QualityMap = Annotated[dict[ModelId, Probability], Field(min_length=1, max_length=L.MAX_MODELS)]
CostMap = Annotated[dict[ModelId, NonNegative], Field(min_length=1, max_length=L.MAX_MODELS)]
AdjustmentMap = Annotated[dict[ModelId, Annotated[Number, Field(ge=-1, le=1)]],
                         Field(min_length=1, max_length=L.MAX_MODELS)]


class FailedAttempt(BaseModel):
    """One model's failed attempt at a prompt that was then forwarded to the next (failover)."""

    model_config = ConfigDict(extra="forbid")

    model_id: ModelId
    error: ErrorText


FailedList = Annotated[list[FailedAttempt], Field(min_length=1, max_length=L.MAX_MODELS)]
Attempt = Annotated[int, Field(ge=1, le=L.MAX_MODELS), BeforeValidator(_json_integer)]


class Event(BaseModel):
    """Base of every event: strict about shape, versioned."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    schema_version: Literal[1] = L.SCHEMA_VERSION


class PromptRequest(Event):
    """A prompt to route. Topic `prompts.in`, key `prompt_id`."""

    prompt_id: PromptId
    text: PromptText
    tolerance: Probability | None = Field(
        default=None, description="τ in [0,1]: 0 = best predicted model, 1 = cheapest"
    )
    tenant: Tenant | None = None
    allowed_models: ModelList | None = Field(
        default=None, description="restrict the candidates to these model ids"
    )
    metadata: Metadata = Field(default_factory=dict)
    sent_at: Timestamp | None = Field(
        default=None, description="when the producer sent it (for end-to-end latency)"
    )


class _Routed(Event):
    """Fields shared by RoutedPrompt and RoutingDecision."""

    prompt_id: PromptId
    tenant: Tenant | None = None
    allowed_models: ModelList | None = None
    sent_at: Timestamp | None = None
    model_id: ModelId = Field(description="the chosen model")
    tolerance: Probability = Field(description="the τ used")
    threshold: Number = Field(description="r: models with predicted quality >= r were feasible")
    predicted_quality: QualityMap
    estimated_cost_usd: CostMap
    feedback_adjustment: AdjustmentMap | None = Field(
        default=None,
        description="what quality feedback added to a model's predicted quality (included in "
        "predicted_quality), for the models it moved; absent when none",
    )
    unhealthy_models: ModelList | None = Field(
        default=None,
        description="candidates left out because a worker reported them unhealthy (ModelHealth; "
        "they keep their scores here); absent when none was",
    )
    ranking: ModelList | None = Field(
        default=None,
        description="the feasible candidates in the rule's order of preference, the chosen model "
        "first: where a worker forwards the prompt when a model fails (failover); absent from "
        "routers that predate it",
    )
    router_version: Label = Field(description="version of the model artifact that routed it")
    routing_latency_ms: NonNegative
    routed_at: Timestamp

    @model_validator(mode="after")
    def _chosen_model_was_scored(self) -> Self:
        if self.model_id not in self.predicted_quality:
            raise ValueError(f"model_id {self.model_id!r} has no predicted_quality")
        if self.model_id not in self.estimated_cost_usd:
            raise ValueError(f"model_id {self.model_id!r} has no estimated_cost_usd")
        if self.allowed_models is not None and self.model_id not in self.allowed_models:
            raise ValueError(f"model_id {self.model_id!r} is not in allowed_models")
        if self.unhealthy_models and self.model_id in self.unhealthy_models:
            raise ValueError(f"model_id {self.model_id!r} is among the unhealthy_models left out")
        if self.ranking is not None:
            unscored = [m for m in self.ranking if m not in self.predicted_quality]
            if unscored or len(set(self.ranking)) < len(self.ranking):
                raise ValueError(f"ranking must name distinct scored models, got {self.ranking}")
        return self


class RoutedPrompt(_Routed):
    """A request with the router's choice. Topic `prompts.routed.<model>`, key `prompt_id`."""

    text: PromptText
    metadata: Metadata = Field(default_factory=dict)
    attempt: Attempt = Field(
        default=1, description="1 from the router; n + 1 when a worker forwards it after attempt n "
        "failed: model_id is then ranking[attempt - 1]",
    )
    failed: FailedList | None = Field(
        default=None, description="the models that failed it before, in order, with their errors "
        "(attempt - 1 of them); absent on a first attempt",
    )

    @model_validator(mode="after")
    def _attempts_add_up(self) -> Self:
        if len(self.failed or ()) != self.attempt - 1:
            raise ValueError(f"attempt {self.attempt} needs {self.attempt - 1} failed "
                             f"attempt(s), got {len(self.failed or ())}")
        if (self.ranking is not None or self.attempt > 1) and (
            self.ranking is None or len(self.ranking) < self.attempt
            or self.ranking[self.attempt - 1] != self.model_id
        ):
            raise ValueError(f"attempt {self.attempt} must go to ranking[{self.attempt - 1}], "
                             f"got model_id {self.model_id!r} and ranking {self.ranking}")
        return self

    def to_decision(
        self, *, reason: str | None = None, variant: str | None = None,
        embedding: str | None = None,
    ) -> RoutingDecision:
        """The audit record of this routing: everything but the text and the metadata."""
        fields = self.model_dump(exclude={"text", "metadata", "attempt", "failed"})
        return RoutingDecision(**fields, reason=reason, variant=variant, embedding=embedding)


class RoutingDecision(_Routed):
    """Audit record of one routing (a RoutedPrompt without text). Topic `router.decisions`; on
    `router.shadow`, a version in shadow's decision (with `shadow_of`), keyed the same."""

    reason: Label | None = None
    variant: Label | None = Field(
        default=None, description='the rule applied: "ipr", "ipr_pair" (ipr between two '
        'candidates), "range", "dynamic_max", or "explore" (bounded exploration: see reason)')
    embedding: Annotated[str, StringConstraints(max_length=L.MAX_EMBEDDING_CHARS)] | None = Field(
        default=None,
        description="the prompt's embedding (base64 of little-endian float16): what the feedback "
        "loop recalibrates on, so the decision log never needs the prompt text",
    )
    shadow_of: Label | None = Field(
        default=None,
        description="on `router.shadow` only: the live version that routed this prompt while "
        "this decision's router_version scored it in shadow (nothing was routed by it)",
    )

    @model_validator(mode="after")
    def _chosen_model_ranks_first(self) -> Self:
        if self.ranking is not None and self.ranking[0] != self.model_id:
            raise ValueError(f"ranking must start with the chosen model {self.model_id!r}, got "
                             f"{self.ranking}")
        return self


class DeadLetter(Event):
    """An input that could not be processed, with the reason. Topic `prompts.dlq`, original key.

    `error_kind` is a short machine-readable reason, e.g. "invalid_json", "validation",
    "too_large", "unknown_model" (`schemas.codec` lists the codec's kinds). `raw` holds at most
    MAX_DLQ_RAW_BYTES of the original value: as text when those bytes are UTF-8, otherwise base64
    (`raw_encoding` says which).
    """

    source_topic: Annotated[str, StringConstraints(min_length=1, max_length=249)]
    partition: Count
    offset: Count
    key: Annotated[str, StringConstraints(max_length=L.MAX_KEY_CHARS)] | None = None
    error: ErrorText
    error_kind: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    raw: Annotated[str, StringConstraints(max_length=L.MAX_DLQ_RAW_CHARS)]
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    raw_size: Count = Field(description="size of the original value in bytes")
    raw_truncated: StrictBool
    at: Timestamp

    @classmethod
    def build(
        cls,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | str | None,
        value: bytes | None,
        error: str | BaseException,
        error_kind: str,
        at: float | None = None,
    ) -> DeadLetter:
        """A dead letter from a consumed record, truncating what is too long to keep."""
        value = value or b""
        kept = value[: L.MAX_DLQ_RAW_BYTES]
        raw_encoding: Literal["utf-8", "base64"] = "utf-8"
        try:
            # final=False drops a multi-byte character cut in half by the truncation.
            decoder = codecs.getincrementaldecoder("utf-8")()
            raw = decoder.decode(kept, final=len(kept) == len(value))
        except UnicodeDecodeError:
            raw, raw_encoding = base64.b64encode(kept).decode("ascii"), "base64"
        if isinstance(key, bytes):
            key = key.decode("utf-8", errors="replace")
        message = str(error) if not isinstance(error, BaseException) else (
            f"{type(error).__name__}: {error}"
        )
        return cls(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=None if key is None else key[: L.MAX_KEY_CHARS],
            error=(message or "unknown error")[: L.MAX_ERROR_CHARS],
            error_kind=error_kind,
            raw=raw,
            raw_encoding=raw_encoding,
            raw_size=len(value),
            raw_truncated=len(kept) < len(value),
            at=time.time() if at is None else at,
        )

    def raw_bytes(self) -> bytes:
        """The kept bytes of the original value."""
        if self.raw_encoding == "base64":
            return base64.b64decode(self.raw)
        return self.raw.encode("utf-8")


class ModelResponse(Event):
    """A model's answer (or its failure). Topic `responses.out`, key `prompt_id`."""

    prompt_id: PromptId
    model_id: ModelId
    text: Annotated[str, StringConstraints(max_length=L.MAX_RESPONSE_CHARS)]
    tokens_in: Count
    tokens_out: Count
    cost_usd: NonNegative
    latency_ms: NonNegative
    error: ErrorText | None = None
    router_version: Label | None = None
    attempt: Attempt = Field(
        default=1, description="which attempt this is (RoutedPrompt.attempt): above 1 when the "
        "prompt's first model(s) failed and a worker forwarded it (failover)",
    )
    failed: FailedList | None = Field(
        default=None, description="the models that failed the prompt before this one answered, "
        "with their errors; their cost is not counted (cost_usd is this model's call)",
    )

    @model_validator(mode="after")
    def _attempts_add_up(self) -> Self:
        if len(self.failed or ()) != self.attempt - 1:
            raise ValueError(f"attempt {self.attempt} needs {self.attempt - 1} failed "
                             f"attempt(s), got {len(self.failed or ())}")
        return self


class QualityFeedback(Event):
    """A quality label for one answer. Topic `feedback.quality`, key `prompt_id`."""

    prompt_id: PromptId
    model_id: ModelId
    quality: Probability
    source: Label = Field(description='who judged it, e.g. "user", "judge:<model>", "dataset"')
    task: Label | None = None


class ModelUpdate(Event):
    """A new model artifact is ready; routers hot-swap to it. Topic `router.control`, key
    `artifacts`; on key `shadow`, the version every router scores in shadow (a tombstone stops
    it)."""

    version: Label
    location: Annotated[str, StringConstraints(min_length=1, max_length=L.MAX_LOCATION_CHARS)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="sha256 of the artifact's manifest"
    )
    models: ModelList


class ModelHealth(Event):
    """A worker's report on its model's backend. Topic `router.control`, key `health:<model_id>`.

    Routers leave a model reported unhealthy out of the candidates until ``reported_at + ttl_s``
    (a worker that keeps failing reports again before then) or until a report says healthy.
    """

    model_id: ModelId
    healthy: StrictBool
    worker: Label = Field(description="the reporting worker process")
    consecutive_errors: Count = Field(
        description="calls in a row that failed (an error response, or forwarded to the next "
        "model by failover)"
    )
    error: ErrorText | None = Field(default=None, description="the last error, when unhealthy")
    reported_at: Timestamp
    ttl_s: Annotated[Number, Field(gt=0, le=86_400)] = Field(
        description="seconds after reported_at that an unhealthy report holds"
    )


EVENTS: tuple[type[Event], ...] = (
    PromptRequest,
    RoutedPrompt,
    RoutingDecision,
    DeadLetter,
    ModelResponse,
    QualityFeedback,
    ModelUpdate,
    ModelHealth,
)
