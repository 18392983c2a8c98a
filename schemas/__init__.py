"""Event contracts of the IPR router: pydantic models, the codec, the JSON Schemas (`json/`)."""

from schemas.codec import SchemaError, decode, encode
from schemas.events import (
    EVENTS,
    AppliedPolicy,
    DeadLetter,
    Event,
    ModelHealth,
    ModelResponse,
    ModelUpdate,
    PromptRequest,
    QualityFeedback,
    RoutedPrompt,
    RoutingDecision,
    TenantPolicy,
    TenantSpend,
)

__all__ = [
    "EVENTS",
    "AppliedPolicy",
    "DeadLetter",
    "Event",
    "ModelHealth",
    "ModelResponse",
    "ModelUpdate",
    "PromptRequest",
    "QualityFeedback",
    "RoutedPrompt",
    "RoutingDecision",
    "SchemaError",
    "TenantPolicy",
    "TenantSpend",
    "decode",
    "encode",
]
