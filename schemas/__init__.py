"""Event contracts of the IPR router: pydantic models, the codec, the JSON Schemas (`json/`)."""

from schemas.budgets import AppliedPolicy, Reservation
from schemas.chat import AssistantMessage, ChatMessage, GenerationParams, Usage
from schemas.codec import SchemaError, decode, encode
from schemas.control import (
    ModelHealth,
    ModelUpdate,
    TenantPolicy,
    TenantReservation,
    TenantSpend,
    WorkerServing,
)
from schemas.events import (
    DeadLetter,
    FailedAttempt,
    ModelResponse,
    PromptRequest,
    QualityFeedback,
    RoutedPrompt,
    RoutingDecision,
)
from schemas.fields import Event
from schemas.stream import StreamChunk

# Every event, in the order of the JSON Schemas (`schemas.generate`).
EVENTS: tuple[type[Event], ...] = (
    PromptRequest,
    RoutedPrompt,
    RoutingDecision,
    DeadLetter,
    ModelResponse,
    StreamChunk,
    QualityFeedback,
    ModelUpdate,
    ModelHealth,
    TenantPolicy,
    TenantSpend,
    TenantReservation,
    WorkerServing,
)

__all__ = [
    "EVENTS",
    "AppliedPolicy",
    "AssistantMessage",
    "ChatMessage",
    "GenerationParams",
    "Usage",
    "DeadLetter",
    "Event",
    "FailedAttempt",
    "ModelHealth",
    "ModelResponse",
    "ModelUpdate",
    "PromptRequest",
    "QualityFeedback",
    "RoutedPrompt",
    "Reservation",
    "RoutingDecision",
    "SchemaError",
    "StreamChunk",
    "TenantPolicy",
    "TenantReservation",
    "TenantSpend",
    "WorkerServing",
    "decode",
    "encode",
]
