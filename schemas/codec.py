"""Bytes <-> events. Values on Kafka are orjson-encoded JSON objects.

SchemaError (ValueError)   a payload is not a valid event; `kind` is the DeadLetter error_kind:
                           "empty", "too_large", "invalid_json" or "validation".
"""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from schemas.limits import MAX_EVENT_BYTES

E = TypeVar("E", bound=BaseModel)

_MAX_ERRORS_SHOWN = 5


class SchemaError(ValueError):
    """A payload could not be decoded into the expected event."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def encode(event: BaseModel) -> bytes:
    """The event as compact JSON bytes."""
    return orjson.dumps(event.model_dump())


def decode(model_cls: type[E], data: bytes | bytearray | memoryview | str | None,
           *, max_bytes: int = MAX_EVENT_BYTES) -> E:
    """Parse and validate one event; raise SchemaError saying what is wrong.

    The message names the fields and the rules they broke, never the input values (prompt text
    is user data).
    """
    name = model_cls.__name__
    if data is None or len(data) == 0:
        raise SchemaError(f"{name}: empty value", kind="empty")
    if len(data) > max_bytes:
        raise SchemaError(f"{name}: {len(data)} bytes, the limit is {max_bytes}", kind="too_large")
    try:
        return model_cls.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise SchemaError(f"{name}: invalid JSON: {errors[0]['msg']}", "invalid_json") from None
        shown = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {_message(e)}"
            for e in errors[:_MAX_ERRORS_SHOWN]
        )
        hidden = len(errors) - _MAX_ERRORS_SHOWN
        more = f" (+{hidden} more)" if hidden > 0 else ""
        raise SchemaError(
            f"{name}: {len(errors)} invalid field(s): {shown}{more}", kind="validation"
        ) from None


def _message(error: ErrorDetails) -> str:
    if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == r"\S":
        return "must not be empty or only whitespace"
    return error["msg"]
