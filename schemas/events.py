"""The data-plane events: a prompt's way from `prompts.in` to its answer and its quality label, and
the dead letters (docs/design.md, "Topics and events"). Field types and the rules every event
follows: `schemas.fields`; the control-plane events: `schemas.control`.
"""

from __future__ import annotations

import base64
import codecs
import time
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, model_validator

from schemas import limits as L
from schemas.budgets import AppliedPolicy, Reservation
from schemas.chat import (
    AssistantMessage,
    ChatMessage,
    FinishReason,
    GenerationParams,
    Messages,
    Usage,
    user_message,
)
from schemas.fields import (
    AdjustmentMap,
    Attempt,
    CostMap,
    Count,
    ErrorText,
    Event,
    HttpStatus,
    Label,
    Metadata,
    ModelId,
    ModelList,
    NonNegative,
    Number,
    Probability,
    PromptId,
    PromptText,
    QualityMap,
    Tenant,
    Timestamp,
)


class FailedAttempt(BaseModel):
    """One model's failed attempt at a prompt that was then forwarded to the next (failover)."""

    model_config = ConfigDict(extra="forbid")

    model_id: ModelId
    error: ErrorText


FailedList = Annotated[list[FailedAttempt], Field(min_length=1, max_length=L.MAX_MODELS)]


def _failed_before(attempt: int, failed: list[FailedAttempt] | None) -> None:
    """Attempt n comes after n - 1 failed ones."""
    if len(failed or ()) != attempt - 1:
        raise ValueError(f"attempt {attempt} needs {attempt - 1} failed attempt(s), "
                         f"got {len(failed or ())}")


TopicName = Annotated[str, StringConstraints(min_length=1, max_length=249,
                                             pattern=r"^[A-Za-z0-9._-]+$")]
SessionId = Annotated[str, StringConstraints(min_length=1, max_length=L.MAX_ID_CHARS)]


class ReplyTo(BaseModel):
    """Where a worker also sends the answer (and a stream's chunks): the reply channel of the
    gateway that took the request."""

    model_config = ConfigDict(extra="forbid")

    topic: TopicName


class _Request(Event):
    """What a model call needs, shared by PromptRequest and RoutedPrompt: one ``text`` (a user
    message) or ``messages``, the generation parameters, and where the answer is awaited."""

    text: PromptText | None = Field(default=None, description="one user message (or messages)")
    messages: Messages | None = Field(
        default=None, description="the conversation in the OpenAI chat format (or text)")
    params: GenerationParams | None = Field(
        default=None, description="chat-completions parameters, passed to the backend unchanged")
    stream: StrictBool = Field(
        default=False, description="stream the answer's chunks to reply_to (needs reply_to)")
    session_id: SessionId | None = Field(
        default=None, description="the conversation this request belongs to (audit)")
    reply_to: ReplyTo | None = None
    metadata: Metadata = Field(default_factory=dict)

    @model_validator(mode="after")
    def _text_or_messages(self) -> Self:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give either text or messages, not both and not neither")
        if self.messages is not None:
            chars = sum(len(m.text()) for m in self.messages)
            if chars > L.MAX_CONVERSATION_CHARS:
                raise ValueError(f"messages hold {chars} characters of content, the limit is "
                                 f"{L.MAX_CONVERSATION_CHARS}")
        if self.stream and self.reply_to is None:
            raise ValueError("stream needs reply_to (a channel the chunks go to)")
        return self

    def conversation(self) -> list[ChatMessage]:
        """The messages of the call: ``messages``, or ``text`` as one user message."""
        return list(self.messages) if self.messages is not None else [user_message(self.text)]


# A request's call, never in a decision: the conversation, its parameters, where its answer goes.
REQUEST_FIELDS = frozenset(set(_Request.model_fields) - set(Event.model_fields))


class PromptRequest(_Request):
    """A prompt to route. Topic `prompts.in`, key `prompt_id`."""

    prompt_id: PromptId
    tolerance: Probability | None = Field(
        default=None, description="τ in [0,1]: 0 = best predicted model, 1 = cheapest"
    )
    tenant: Tenant | None = None
    allowed_models: ModelList | None = Field(
        default=None, description="restrict the candidates to these model ids"
    )
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
    unserved_models: ModelList | None = Field(
        default=None,
        description="candidates left out because no live worker announced them (WorkerServing); "
        "absent when none was",
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
    policy: AppliedPolicy | None = Field(
        default=None,
        description="the tenant policy applied (router.policies); absent when the prompt has no "
        "tenant or its tenant has no policy",
    )
    tenant_spend_usd: NonNegative | None = Field(
        default=None,
        description="the tenant's committed spend in its budget's current period when the "
        "decision was made (answered: their cost_usd; in flight: their reserved_usd); absent "
        "without a budget",
    )
    reserved_usd: NonNegative | None = Field(
        default=None, description="what this prompt reserved of its tenant's budget (its "
        "model's estimated cost), until its answer settles it; absent without a budget")
    scored_view: Label | None = Field(
        default=None,
        description="which view of the conversation the estimators scored (e.g. last_user: the "
        "newest user message); absent from routers that predate chat requests",
    )

    @model_validator(mode="after")
    def _chosen_model_was_scored(self) -> Self:
        if self.model_id not in self.predicted_quality:
            raise ValueError(f"model_id {self.model_id!r} has no predicted_quality")
        if self.model_id not in self.estimated_cost_usd:
            raise ValueError(f"model_id {self.model_id!r} has no estimated_cost_usd")
        if self.allowed_models is not None and self.model_id not in self.allowed_models:
            raise ValueError(f"model_id {self.model_id!r} is not in allowed_models")
        for left_out in ("unhealthy_models", "unserved_models"):
            if self.model_id in (getattr(self, left_out) or ()):
                raise ValueError(f"model_id {self.model_id!r} is among the {left_out} left out")
        if self.ranking is not None:
            unscored = [m for m in self.ranking if m not in self.predicted_quality]
            if unscored or len(set(self.ranking)) < len(self.ranking):
                raise ValueError(f"ranking must name distinct scored models, got {self.ranking}")
        return self


class RoutedPrompt(_Routed, _Request):
    """A request with the router's choice. Topic `prompts.routed.<model>`, key `prompt_id`."""

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
        _failed_before(self.attempt, self.failed)
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
        fields = self.model_dump(exclude=REQUEST_FIELDS | {"attempt", "failed"})
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
    """A model's answer (or its failure). Topic `responses.out`, key `prompt_id`; also the
    request's `reply_to`, when it has one."""

    prompt_id: PromptId
    model_id: ModelId = Field(description="the model that answered (the one that failed last, "
                              "on an error)")
    text: Annotated[str, StringConstraints(max_length=L.MAX_RESPONSE_CHARS)] = Field(
        description="the answer's content as one string (message.content, or empty)")
    message: AssistantMessage | None = Field(
        default=None, description="the assistant message: content and tool_calls")
    finish_reason: FinishReason | None = None
    usage: Usage | None = Field(default=None, description="tokens as the backend counted them")
    tokens_in: Count
    tokens_out: Count
    cost_usd: NonNegative
    latency_ms: NonNegative
    error: ErrorText | None = None
    error_status: HttpStatus | None = Field(
        default=None, description="the backend's HTTP status of a failed call (0: no answer)")
    error_type: Label | None = Field(
        default=None, description="the backend's error type (e.g. rate_limit, timeout)")
    retryable: StrictBool | None = Field(
        default=None, description="whether the failure was one a retry could cure")
    router_version: Label | None = None
    tenant: Tenant | None = Field(
        default=None, description="the prompt's tenant, whose spend cost_usd counts in")
    attempt: Attempt = Field(
        default=1, description="which attempt this is (RoutedPrompt.attempt): above 1 when the "
        "prompt's first model(s) failed and a worker forwarded it (failover)",
    )
    failed: FailedList | None = Field(
        default=None, description="the models that failed the prompt before this one answered, "
        "with their errors; their cost is not counted (cost_usd is this model's call)",
    )
    reservation: Reservation | None = Field(
        default=None, description="what the router reserved of the tenant's budget for this "
        "prompt: this answer settles it (an error releases it); absent without a budget")

    @model_validator(mode="after")
    def _attempts_add_up(self) -> Self:
        _failed_before(self.attempt, self.failed)
        return self


class QualityFeedback(Event):
    """A quality label for one answer. Topic `feedback.quality`, key `prompt_id`."""

    prompt_id: PromptId
    model_id: ModelId
    quality: Probability
    source: Label = Field(description='who judged it, e.g. "user", "judge:<model>", "dataset"')
    task: Label | None = None
