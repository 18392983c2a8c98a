"""Constructing events and their contracts: round trips, bounds, decisions, dead letters, topics."""

import base64

import orjson
import pytest

from schemas import (
    EVENTS,
    DeadLetter,
    FailedAttempt,
    ModelResponse,
    ModelUpdate,
    PromptRequest,
    QualityFeedback,
    RoutingDecision,
    SchemaError,
    decode,
    encode,
)
from schemas.limits import MAX_DLQ_RAW_BYTES, MAX_METADATA_KEYS, MAX_TEXT_CHARS
from schemas.topics import model_topic
from tests.unit.schemas.examples import EXAMPLES, request, routed


def test_a_routed_prompt_cannot_go_to_a_model_it_left_out_as_unhealthy():
    assert routed(unhealthy_models=["large"]).unhealthy_models == ["large"]
    with pytest.raises(ValueError, match="among the unhealthy_models"):
        routed(unhealthy_models=["small"])


def test_failover_fields_must_add_up():
    assert routed().ranking is None and routed().attempt == 1  # old events parse as before
    assert routed(ranking=["small", "large"]).to_decision().ranking == ["small", "large"]
    failed = [FailedAttempt(model_id="small", error="HTTP 500")]
    with pytest.raises(ValueError, match="distinct scored models"):
        routed(ranking=["small", "nope"])
    with pytest.raises(ValueError, match=r"must go to ranking\[0\]"):
        routed(ranking=["large", "small"])  # a first attempt goes to the ranking's first
    with pytest.raises(ValueError, match=r"must go to ranking\[1\]"):
        routed(model_id="large", attempt=2, failed=failed)  # no ranking to fail over along
    with pytest.raises(ValueError, match="needs 1 failed attempt"):
        routed(model_id="large", ranking=["small", "large"], attempt=2)
    with pytest.raises(ValueError, match="needs 0 failed attempt"):
        ModelResponse(prompt_id="p", model_id="m", text="", tokens_in=0, tokens_out=0,
                      cost_usd=0.0, latency_ms=0.0, failed=failed)
    with pytest.raises(ValueError, match="must start with the chosen model"):
        RoutingDecision.model_validate(
            routed(ranking=["small", "large"]).to_decision().model_dump() | {"model_id": "large"})


def test_every_event_has_an_example():
    assert {type(e) for e in EXAMPLES} == set(EVENTS)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip(event):
    data = encode(event)
    assert isinstance(data, bytes)
    back = decode(type(event), data)
    assert back == event
    assert orjson.loads(data)["schema_version"] == 1


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_unknown_fields_are_rejected(event):
    payload = orjson.loads(encode(event)) | {"surprise": 1}
    with pytest.raises(SchemaError) as err:
        decode(type(event), orjson.dumps(payload))
    assert err.value.kind == "validation"
    assert "surprise" in str(err.value)


def test_other_schema_versions_are_rejected():
    with pytest.raises(SchemaError, match="schema_version"):
        decode(PromptRequest, request(schema_version=2))


@pytest.mark.parametrize("tolerance", [2, -0.1, 1.0000001])
def test_tolerance_outside_unit_interval_is_rejected(tolerance):
    with pytest.raises(SchemaError, match="tolerance"):
        decode(PromptRequest, request(tolerance=tolerance))


@pytest.mark.parametrize("tolerance", [0, 0.5, 1])
def test_tolerance_bounds_are_accepted(tolerance):
    assert decode(PromptRequest, request(tolerance=tolerance)).tolerance == tolerance


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_rejected(text):
    with pytest.raises(SchemaError, match="text: "):
        decode(PromptRequest, request(text=text))


def test_text_over_the_limit_is_rejected_at_the_limit_accepted():
    assert len(decode(PromptRequest, request(text="x" * MAX_TEXT_CHARS)).text) == MAX_TEXT_CHARS
    with pytest.raises(SchemaError, match="text"):
        decode(PromptRequest, request(text="x" * (MAX_TEXT_CHARS + 1)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"prompt_id": ""},
        {"prompt_id": "x" * 201},
        {"allowed_models": []},
        {"allowed_models": [""]},
        {"allowed_models": [f"m{i}" for i in range(65)]},
        {"metadata": {f"k{i}": i for i in range(MAX_METADATA_KEYS + 1)}},
        {"metadata": {"nested": {"a": 1}}},
        {"metadata": {"list": [1]}},
        {"tenant": 5},
    ],
    ids=str,
)
def test_bounds_are_enforced(overrides):
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, request(**overrides))
    assert err.value.kind == "validation"


def test_metadata_keeps_value_types():
    req = decode(PromptRequest, request(metadata={"s": "1", "i": 1, "f": 1.5, "b": False}))
    assert req.metadata == {"s": "1", "i": 1, "f": 1.5, "b": False}
    assert [type(v) for v in req.metadata.values()] == [str, int, float, bool]

def test_routed_prompt_must_choose_a_scored_allowed_model():
    with pytest.raises(ValueError, match="predicted_quality"):
        routed(model_id="other")
    with pytest.raises(ValueError, match="allowed_models"):
        routed(allowed_models=["large"])


def test_decision_is_the_routed_prompt_without_text():
    decision = routed().to_decision(variant="ipr")
    assert isinstance(decision, RoutingDecision)
    assert "text" not in decision.model_dump() and "metadata" not in decision.model_dump()
    assert decision.model_id == "small" and decision.predicted_quality["large"] == 0.8
    assert decision.variant == "ipr"


def test_quality_feedback_and_model_update_bounds():
    with pytest.raises(SchemaError, match="quality"):
        decode(QualityFeedback, orjson.dumps(
            {"prompt_id": "p", "model_id": "m", "quality": 1.5, "source": "user"}))
    with pytest.raises(SchemaError, match="sha256"):
        decode(ModelUpdate, orjson.dumps(
            {"version": "v", "location": "/x", "sha256": "XYZ", "models": ["a"]}))


def test_dead_letter_keeps_utf8_as_text_and_truncates():
    value = "é".encode() * MAX_DLQ_RAW_BYTES  # 2 bytes each: twice the bound
    dl = DeadLetter.build(source_topic="prompts.in", partition=0, offset=5, key="k",
                          value=value, error=ValueError("boom"), error_kind="too_large", at=1.0)
    assert dl.raw_encoding == "utf-8" and dl.raw_truncated and dl.raw_size == len(value)
    assert dl.raw_bytes() == value[:MAX_DLQ_RAW_BYTES]
    assert dl.error == "ValueError: boom"
    assert decode(DeadLetter, encode(dl)) == dl


def test_dead_letter_keeps_binary_as_base64():
    value = bytes(range(256)) * 2
    dl = DeadLetter.build(source_topic="prompts.in", partition=1, offset=0, key=None,
                          value=value, error="x", error_kind="invalid_json", at=1.0)
    assert dl.raw_encoding == "base64" and not dl.raw_truncated
    assert base64.b64decode(dl.raw) == value == dl.raw_bytes()


@pytest.mark.parametrize(
    ("model_id", "topic"),
    [
        ("gpt-4o-mini", "prompts.routed.gpt-4o-mini"),
        ("meta/llama-3.1:8b", "prompts.routed.meta_llama-3.1_8b"),
        ("claude 3.5 sonnet", "prompts.routed.claude_3.5_sonnet"),
        ("Mixtral_8x7B.v2", "prompts.routed.Mixtral_8x7B.v2"),
        ("modèle", "prompts.routed.mod_le"),
    ],
)
def test_model_topic(model_id, topic):
    assert model_topic(model_id) == topic


def test_model_topic_rejects_empty_and_too_long_ids():
    with pytest.raises(ValueError):
        model_topic("")
    with pytest.raises(ValueError, match="249"):
        model_topic("m" * 240)
