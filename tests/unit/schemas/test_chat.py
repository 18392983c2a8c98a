"""Chat requests: the conversation's rules, the bounds, and what is refused by name."""

from __future__ import annotations

import orjson
import pytest

from schemas import PromptRequest, RoutedPrompt, SchemaError, decode
from schemas import limits as L
from tests.unit.schemas.examples import CHAT, PARAMS, routed

DEEP = 1
for _ in range(L.MAX_PARAM_DEPTH):
    DEEP = [DEEP]


def chat(**fields) -> bytes:
    return orjson.dumps({"prompt_id": "c", "messages": CHAT} | fields)


def refused(payload: bytes) -> SchemaError:
    with pytest.raises(SchemaError) as e:
        decode(PromptRequest, payload)
    return e.value


def test_a_chat_request_keeps_every_message_and_parameter() -> None:
    req = decode(PromptRequest, chat(params=PARAMS))
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool", "user"]
    assert req.messages[2].tool_calls[0].function.name == "weather"
    assert req.messages[3].tool_call_id == "call_1"
    assert req.messages[4].text() == "And tomorrow?"
    assert req.params.for_backend() == PARAMS  # passed on unchanged, nothing added
    assert req.params.requested_tokens() == 200


def test_text_is_one_user_message() -> None:
    req = decode(PromptRequest, orjson.dumps({"prompt_id": "t", "text": "hi"}))
    assert [(m.role, m.content) for m in req.conversation()] == [("user", "hi")]


@pytest.mark.parametrize(("fields", "says"), [
    ({"text": "hi"}, "either text or messages"),
    ({"messages": None}, "either text or messages"),
    ({"stream": True}, "stream needs reply_to"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "needs tool_call_id"),
    ({"messages": [{"role": "user", "content": "x", "tool_call_id": "c"}]}, "needs tool_call_id"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
     "tool_calls on a user message"),
    ({"messages": [{"role": "user"}]}, "needs content"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"messages": []}, "at least 1 item"),
    ({"messages": [{"role": "user", "content": "x"}] * (L.MAX_MESSAGES + 1)}, "at most 256"),
    ({"params": {"temperature": 3}}, "params.temperature"),
    ({"params": {"max_tokens": 0}}, "params.max_tokens"),
    ({"params": {"stop": ["a", "b", "c", "d", "e"]}}, "params.stop"),
    ({"params": {"best_of": 2}}, "params.best_of: Extra inputs are not permitted"),
    ({"params": {"response_format": {"a": DEEP}}}, "nested deeper than 32 levels"),
])
def test_a_request_that_breaks_the_contract_is_a_validation_error(fields, says) -> None:
    e = refused(chat(**fields))
    assert e.kind == "validation" and says in str(e)


def test_the_conversation_is_bounded_as_a_whole() -> None:
    long = "x" * (L.MAX_MESSAGE_CHARS - 1)
    n = L.MAX_CONVERSATION_CHARS // L.MAX_MESSAGE_CHARS + 1
    e = refused(chat(messages=[{"role": "user", "content": long}] * n))
    assert e.kind == "validation" and "the limit is 400000" in str(e)


@pytest.mark.parametrize(("fields", "says"), [
    ({"params": {"n": 2}}, "n other than 1"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}, "'image_url'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "'input_audio'"),
    ({"params": {"modalities": ["text", "audio"]}}, "output modality"),
    ({"params": {"audio": {"voice": "alloy", "format": "wav"}}}, "audio output"),
])
def test_what_cannot_be_honoured_is_refused_by_name(fields, says) -> None:
    e = refused(chat(**fields))
    assert e.kind == "unsupported" and says in str(e) and "is not supported" in str(e)


def test_n_of_one_is_accepted() -> None:
    assert decode(PromptRequest, chat(params={"n": 1})).params.n == 1


def test_a_decision_carries_no_conversation_and_no_parameters() -> None:
    r = routed(prompt_id="c", text=None, messages=CHAT, params=PARAMS, session_id="s",
               scored_view="last_user")
    d = r.to_decision(variant="ipr")
    dumped = d.model_dump()
    assert not {"text", "messages", "params", "reply_to", "stream", "metadata"} & set(dumped)
    assert d.scored_view == "last_user"
    assert isinstance(r, RoutedPrompt) and r.conversation()[0].role == "system"
