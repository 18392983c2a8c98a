"""Bytes <-> events. Values on Kafka are orjson-encoded JSON objects.

SchemaError (ValueError)   a payload is not a valid event; `kind` is the DeadLetter error_kind:
    "empty"            no value (a tombstone) or zero bytes
    "too_large"        more than MAX_EVENT_BYTES, refused before parsing
    "invalid_unicode"  not valid UTF-8, or a string with a lone UTF-16 surrogate escape
                       ("\\ud800" without its low half, or a low half alone): not Unicode text
    "too_deep"         arrays/objects nested deeper than MAX_JSON_DEPTH levels, where the JSON
                       parser stops (no valid event is more than 2 levels deep)
    "invalid_json"     any other JSON syntax error (including a UTF-8 byte order mark in front)
    "validation"       valid JSON that breaks the event's contract (wrong field, type or bound;
                       e.g. "0.5" where a number is expected)
    "unsupported"      a valid request for what the system cannot honour (`schemas.chat`:
                       n > 1, image or audio parts, audio output), named in the message

Messages name the event, the fields and the rules they broke, or the position (line, column or
byte) of a syntax error; never the input values (prompt text is user data).
"""

from __future__ import annotations

import re
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from schemas.chat import UNSUPPORTED
from schemas.errors import IprError
from schemas.limits import MAX_EVENT_BYTES, MAX_JSON_DEPTH

E = TypeVar("E", bound=BaseModel)

_MAX_ERRORS_SHOWN = 5
_UTF8_BOM = b"\xef\xbb\xbf"
_POSITION = re.compile(r" at (line \d+ column \d+)$")
# What pydantic-core's parser (jiter) says of a lone surrogate escape: a high one not followed by
# `\u`, or followed by an escape that is not a low one, or a low one alone ("leading" even then).
_SURROGATE_ERRORS = ("unexpected end of hex escape", "lone leading surrogate in hex escape")
_LONE_SURROGATE = "a lone UTF-16 surrogate escape (\\uD800-\\uDFFF outside a high-low pair)"
# Type errors get the JSON type that came instead: "a valid number, not a string".
_TYPE_ERRORS = {"float_type", "int_type", "bool_type", "string_type", "list_type", "dict_type"}


# Every kind a decode fails with (what each means: above), for counters that start at zero.
ERROR_KINDS = ("empty", "too_large", "invalid_unicode", "too_deep", "invalid_json", "validation",
               UNSUPPORTED)


class SchemaError(IprError, ValueError):
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
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SchemaError(
                f"{name}: not valid Unicode: a lone UTF-16 surrogate at character {exc.start}",
                kind="invalid_unicode",
            ) from None
    elif isinstance(data, memoryview):
        data = data.tobytes()  # the parser takes str, bytes or bytearray only
    if len(data) > max_bytes:
        raise SchemaError(f"{name}: {len(data)} bytes, the limit is {max_bytes}", kind="too_large")
    try:
        return model_cls.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=True)
        if any(e["type"] == "json_invalid" for e in errors):
            raise _syntax_error(name, data, errors[0]) from None
        shown = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {_message(e)}"
            for e in errors[:_MAX_ERRORS_SHOWN]
        )
        hidden = len(errors) - _MAX_ERRORS_SHOWN
        more = f" (+{hidden} more)" if hidden > 0 else ""
        kind = UNSUPPORTED if any(e["type"] == UNSUPPORTED for e in errors) else "validation"
        raise SchemaError(f"{name}: {len(errors)} invalid field(s): {shown}{more}", kind) from None


def _syntax_error(name: str, data: bytes | bytearray, error: ErrorDetails) -> SchemaError:
    """What is really wrong with a payload the JSON parser refused (the error path only)."""
    try:
        str(data, "utf-8")
    except UnicodeDecodeError as exc:  # its message would show the bytes: keep the position only
        return SchemaError(f"{name}: not valid UTF-8 at byte {exc.start}", "invalid_unicode")
    parser_says = str(error.get("ctx", {}).get("error") or error["msg"])
    found = _POSITION.search(parser_says)
    where = f" at {found.group(1)}" if found else ""
    if parser_says.startswith("recursion limit exceeded"):
        return SchemaError(
            f"{name}: JSON nested deeper than {MAX_JSON_DEPTH} levels{where}", "too_deep"
        )
    if parser_says.startswith(_SURROGATE_ERRORS):
        return SchemaError(
            f"{name}: not valid Unicode: {_LONE_SURROGATE} in a string{where}", "invalid_unicode"
        )
    if data.startswith(_UTF8_BOM):
        return SchemaError(
            f"{name}: invalid JSON: starts with a UTF-8 byte order mark (BOM); send the JSON "
            "without it", "invalid_json"
        )
    return SchemaError(f"{name}: invalid JSON: {parser_says}", "invalid_json")


def _message(error: ErrorDetails) -> str:
    if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == r"\S":
        return "must not be empty or only whitespace"
    if error["type"] in _TYPE_ERRORS:
        return f"{error['msg']}, not {_json_type(error.get('input'))}"
    return error["msg"]


def _json_type(value: object) -> str:
    """The JSON type of a parsed value, never the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
