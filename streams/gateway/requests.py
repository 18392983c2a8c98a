"""A chat-completions body as a PromptRequest, and the model name that says how it is routed.

Naming the router (RouteLLM's convention for the tolerance): ``<alias>`` (``ipr``) routes among
every model, ``<alias>-<tau>`` (``ipr-0.3``) at tolerance τ, and a model id of the artifacts
pins that model (``allowed_models`` = [id]: still routed through Kafka, so it is audited and
counted). The header ``x-ipr-tolerance`` and the extra body fields ``tolerance`` and
``allowed_models`` say the same; the body wins over the header, the header over the name.
Any other name is 404 ``model_not_found``. Pure: no Kafka, no HTTP.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas import GenerationParams, PromptRequest
from schemas.chat import UNSUPPORTED
from schemas.events import ReplyTo
from streams.gateway.errors import ApiError

# the body's fields besides GenerationParams': OpenAI's, then the gateway's own extras
_REQUEST_FIELDS = ("model", "messages", "stream", "metadata", "tolerance", "allowed_models",
                   "session_id")


@dataclass(frozen=True)
class Target:
    """What a model name asks for: a tolerance and the allowed models (None: not said)."""

    tolerance: float | None = None
    allowed_models: list[str] | None = None


def parse_tolerance(value: Any, where: str) -> float:
    """τ from a header or a name: a number in [0, 1], else a 400 naming ``where``."""
    try:
        tau = float(value)
    except (TypeError, ValueError):
        tau = math.nan
    if not 0.0 <= tau <= 1.0:  # NaN fails too
        raise ApiError(400, f"{where} must be a number in [0, 1], got {str(value)[:40]!r}",
                       param=where, code="invalid_tolerance")
    return tau


def parse_model(name: Any, alias: str, models: Collection[str]) -> Target:
    """The target a model name asks for; 404 model_not_found for a name it does not know."""
    if not isinstance(name, str) or not name:
        raise ApiError(400, "model is required: a string, the router's alias "
                       f"({alias!r}, or '{alias}-<tau>') or a model id", param="model")
    if name == alias:
        return Target()
    if name in models:
        return Target(allowed_models=[name])
    if name.startswith(alias + "-"):
        suffix = name[len(alias) + 1:]
        try:
            float(suffix)
        except ValueError:
            pass
        else:
            return Target(tolerance=parse_tolerance(suffix, "model"))
    raise ApiError(404, f"the model {name[:200]!r} does not exist: expected {alias!r}, "
                   f"'{alias}-<tau>' with tau in [0, 1], or one of {len(models)} model ids "
                   "(GET /v1/models)", param="model", code="model_not_found")


def idempotent_prompt_id(tenant: str | None, key: str) -> str:
    """The prompt id of an Idempotency-Key: the same (tenant, key), the same prompt."""
    digest = hashlib.sha256(f"{tenant or ''}\0{key}".encode()).hexdigest()[:32]
    return f"idem-{digest}"


def _validation_error(e: ValidationError, prefix: str = "") -> ApiError:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    param = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or None)
    if first["type"] == "extra_forbidden":
        return ApiError(400, f"unknown field {param!r}: expected the chat-completions fields "
                        "(and tolerance, allowed_models, session_id)", param=param,
                        code="unknown_field")
    code = UNSUPPORTED if first["type"] == UNSUPPORTED else "invalid_value"
    return ApiError(400, f"{param or 'body'}: {first['msg']}", param=param, code=code)


def to_prompt_request(body: Any, *, prompt_id: str, target: Target, tenant: str | None,
                      header_tolerance: float | None, reply_topic: str,
                      sent_at: float) -> PromptRequest:
    """The PromptRequest of a chat-completions body (400 for what does not fit)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object (a chat-completions request)")
    if not body.get("messages"):
        raise ApiError(400, "messages is required: a non-empty list of chat messages",
                       param="messages")
    params = {k: v for k, v in body.items() if k not in _REQUEST_FIELDS}
    try:
        generation = GenerationParams(**params) if params else None
    except ValidationError as e:
        raise _validation_error(e) from None
    tolerance, allowed = target.tolerance, target.allowed_models
    if header_tolerance is not None:
        tolerance = header_tolerance
    if body.get("tolerance") is not None:
        tolerance = body["tolerance"]
    if body.get("allowed_models") is not None:
        asked = body["allowed_models"]
        if allowed is not None and isinstance(asked, list) and allowed[0] not in asked:
            raise ApiError(400, f"model {allowed[0]!r} is not in allowed_models",
                           param="allowed_models")
        allowed = allowed or asked
    try:
        return PromptRequest(
            prompt_id=prompt_id, messages=body.get("messages"), params=generation,
            tolerance=tolerance, allowed_models=allowed, tenant=tenant,
            metadata=body.get("metadata") or {}, session_id=body.get("session_id"),
            stream=False if body.get("stream") is None else body["stream"],
            reply_to=ReplyTo(topic=reply_topic), sent_at=sent_at,
        )
    except ValidationError as e:
        raise _validation_error(e) from None
