"""Numbers are JSON numbers: strict numeric, integer and boolean fields."""

import orjson
import pytest

from schemas import ModelHealth, ModelResponse, PromptRequest, SchemaError, decode, encode
from schemas import limits as L
from tests.unit.schemas.examples import EXAMPLES, request


def _numeric_fields(event_cls):
    """(field, is_map, JSON type) of every number or integer property of the event's JSON Schema,
    including the values of the per-model maps (metadata values may be strings: not numeric)."""
    found = []
    for name, prop in event_cls.model_json_schema()["properties"].items():
        if name == "schema_version":
            continue
        for option in prop.get("anyOf", [prop]):
            if option.get("type") in ("number", "integer"):
                found.append((name, False, option["type"]))
                continue
            values = [option.get("additionalProperties"),
                      *option.get("patternProperties", {}).values()]
            types = {v.get("type") for v in values if isinstance(v, dict)} & {"number", "integer"}
            if option.get("type") == "object" and types:
                found.append((name, True, types.pop()))
    return found


NUMERIC_FIELDS = [  # the fields each example sets (a failure's error_status, say)
    (example, field, is_map, json_type)
    for example in EXAMPLES
    for field, is_map, json_type in _numeric_fields(type(example))
    if getattr(example, field) is not None
]


def _with(example, field, is_map, make):
    """The example's JSON with one numeric value (the field, or a map's first value) remade."""
    payload = orjson.loads(encode(example))
    assert payload.get(field) is not None, f"give the {type(example).__name__} example a {field}"
    if is_map:
        key = next(iter(payload[field]))
        payload[field][key] = make(payload[field][key])
        return orjson.dumps(payload), f"{field}.{key}", payload[field][key]
    payload[field] = make(payload[field])
    return orjson.dumps(payload), field, payload[field]


def test_numeric_fields_are_found_in_every_event_that_has_them():
    by_event = {type(e).__name__: set() for e in EXAMPLES}
    for example, field, _, _ in NUMERIC_FIELDS:
        by_event[type(example).__name__].add(field)
    assert by_event["PromptRequest"] == {"tolerance", "sent_at"}
    assert {"predicted_quality", "estimated_cost_usd", "feedback_adjustment", "threshold",
            "routing_latency_ms", "routed_at"} <= by_event["RoutedPrompt"]
    assert by_event["ModelResponse"] == {"tokens_in", "tokens_out", "cost_usd", "latency_ms",
                                         "attempt", "error_status"}
    assert by_event["ModelHealth"] == {"consecutive_errors", "reported_at", "ttl_s"}
    assert by_event["DeadLetter"] == {"partition", "offset", "raw_size", "at"}
    assert by_event["QualityFeedback"] == {"quality"}


def _ids(case):
    example, field, is_map, _ = case
    return f"{type(example).__name__}.{field}"


@pytest.mark.parametrize("case", NUMERIC_FIELDS, ids=_ids)
def test_a_number_in_a_json_string_is_rejected(case):
    example, field, is_map, json_type = case
    data, where, _ = _with(example, field, is_map, lambda v: str(v))
    with pytest.raises(SchemaError) as err:
        decode(type(example), data)
    assert err.value.kind == "validation"
    expected = "a valid number" if json_type == "number" else "a valid integer"
    assert f"{where}: Input should be {expected}, not a string" in str(err.value)


@pytest.mark.parametrize("case", NUMERIC_FIELDS, ids=_ids)
def test_a_boolean_is_not_a_number(case):
    example, field, is_map, json_type = case
    data, where, _ = _with(example, field, is_map, lambda v: True)
    with pytest.raises(SchemaError) as err:
        decode(type(example), data)
    assert err.value.kind == "validation"
    assert f"{where}: Input should be a valid " in str(err.value)
    assert "not a boolean" in str(err.value)


@pytest.mark.parametrize("case", NUMERIC_FIELDS, ids=_ids)
def test_an_integral_number_is_accepted_as_either_json_type(case):
    """A float field takes 1 for 1.0; an integer field takes 5.0 (JSON Schema's "integer")."""
    example, field, is_map, json_type = case
    make = (lambda v: int(v)) if json_type == "number" else (lambda v: float(v))
    data, _, sent = _with(example, field, is_map, make)
    back = decode(type(example), data).model_dump()
    value = back[field][next(iter(back[field]))] if is_map else back[field]
    assert value == sent
    assert type(value) is (float if json_type == "number" else int)


def test_the_tolerance_of_a_request_must_be_a_json_number():
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, request(tolerance="0.5"))
    assert err.value.kind == "validation"
    assert str(err.value) == (
        "PromptRequest: 1 invalid field(s): tolerance: Input should be a valid number, not a string"
    )
    assert decode(PromptRequest, request(tolerance=1)).tolerance == 1.0
    assert decode(PromptRequest, request(tolerance=0)).tolerance == 0.0
    assert decode(PromptRequest, request(tolerance=None)).tolerance is None


def test_a_metadata_value_in_a_string_stays_a_string():
    assert decode(PromptRequest, request(metadata={"n": "3"})).metadata == {"n": "3"}


@pytest.mark.parametrize("value", [b"5.5", b"1e400", b"-1", str(2**63).encode(), b"1e19"])
def test_an_integer_field_takes_only_an_integer_in_range(value):
    payload = orjson.loads(encode(EXAMPLES[4])) | {"tokens_in": 0}
    data = orjson.dumps(payload).replace(b'"tokens_in":0', b'"tokens_in":' + value)
    with pytest.raises(SchemaError, match="tokens_in: ") as err:
        decode(ModelResponse, data)
    assert err.value.kind == "validation"


def test_an_integer_beyond_64_bits_in_metadata_can_be_written_back():
    """orjson writes only 64-bit integers: a larger one is kept as the number it is, a float."""
    req = decode(PromptRequest, request().replace(b"}", b',"metadata":{"big":' + b"9" * 30 + b"}}"))
    assert req.metadata == {"big": 1e30}
    assert orjson.loads(encode(req))["metadata"] == {"big": 1e30}
    assert L.MAX_INT == 2**63 - 1


@pytest.mark.parametrize("value", ["false", 0, 1, "true", None])
def test_a_boolean_must_be_a_json_boolean(value):
    payload = orjson.loads(encode(EXAMPLES[7])) | {"healthy": value}
    with pytest.raises(SchemaError, match="healthy: Input should be a valid boolean") as err:
        decode(ModelHealth, orjson.dumps(payload))
    assert err.value.kind == "validation"


def test_a_json_type_error_says_which_type_came_instead():
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, request(text=5, allowed_models="a", tolerance=None, tenant=[1]))
    message = str(err.value)
    assert "text: Input should be a valid string, not a number" in message
    assert "allowed_models: Input should be a valid array, not a string" in message
    assert "tenant: Input should be a valid string, not an array" in message
