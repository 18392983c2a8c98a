"""Event contracts of the IPR router: pydantic models, the codec, the JSON Schemas (`json/`)."""

from schemas.codec import SchemaError, decode, encode
from schemas.events import (
    EVENTS,
    DeadLetter,
    Event,
    FailedAttempt,
    ModelHealth,
    ModelResponse,
    ModelUpdate,
    PromptRequest,
    QualityFeedback,
    RoutedPrompt,
    RoutingDecision,
)

__all__ = [
    "EVENTS",
    "DeadLetter",
    "Event",
    "FailedAttempt",
    "ModelHealth",
    "ModelResponse",
    "ModelUpdate",
    "PromptRequest",
    "QualityFeedback",
    "RoutedPrompt",
    "RoutingDecision",
    "SchemaError",
    "decode",
    "encode",
]
