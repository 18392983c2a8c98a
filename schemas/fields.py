"""What every event is made of: the bounded field types and the `Event` base (docs/design.md,
"Topics and events").

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

from typing import Annotated, Literal

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
PositiveCount = Annotated[int, Field(ge=1, le=L.MAX_INT), BeforeValidator(_json_integer)]
HttpStatus = Annotated[int, Field(ge=0, le=999), BeforeValidator(_json_integer)]
ModelList = Annotated[list[ModelId], Field(min_length=1, max_length=L.MAX_MODELS)]
# Which attempt at a prompt (failover): 1 is the routed model, 2 the next of its ranking, ...
Attempt = Annotated[int, Field(ge=1, le=L.MAX_MODELS), BeforeValidator(_json_integer)]

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
# A tenant's budget period: the UTC calendar hour, day or month.
Period = Literal["hour", "day", "month"]
OnExhausted = Literal["cheapest", "reject"]


class Event(BaseModel):
    """Base of every event: strict about shape, versioned."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    schema_version: Literal[1] = L.SCHEMA_VERSION
