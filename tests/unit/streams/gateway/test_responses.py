"""Answers in the chat.completion format, the x-ipr headers, errors in OpenAI's format."""

from __future__ import annotations

import pytest

from schemas import ModelResponse
from schemas.chat import AssistantMessage, FunctionCall, ToolCall, Usage
from streams.gateway.errors import backend_error, dead_letter_error, timeout_error
from streams.gateway.responses import chat_completion, ipr_headers, model_list


def response(**kw) -> ModelResponse:
    base = dict(prompt_id="p1", model_id="m-small", text="hello", tokens_in=5, tokens_out=2,
                cost_usd=0.00012, latency_ms=3.0, router_version="v7", attempt=2,
                failed=[{"model_id": "m-big", "error": "HTTP 500"}])
    return ModelResponse(**{**base, **kw})


def test_an_answer_in_the_chat_completion_format():
    out = chat_completion(response(finish_reason="length", usage=Usage(
        prompt_tokens=6, completion_tokens=3, total_tokens=9)), created=100)
    assert out["object"] == "chat.completion" and out["id"] == "chatcmpl-p1"
    assert (out["model"], out["created"]) == ("m-small", 100)
    (choice,) = out["choices"]
    assert choice["message"]["content"] == "hello" and choice["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}


def test_usage_from_the_token_counts_when_the_backend_gave_none():
    out = chat_completion(response(), created=1)
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert out["choices"][0]["finish_reason"] == "stop"


def test_tool_calls_are_answered_as_the_model_made_them():
    call = ToolCall(id="c1", function=FunctionCall(name="get", arguments='{"x": 1}'))
    out = chat_completion(response(text="", message=AssistantMessage(content=None,
                                                                     tool_calls=[call])), 1)
    message = out["choices"][0]["message"]
    assert message["content"] is None and out["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [{"id": "c1", "type": "function",
                                      "function": {"name": "get", "arguments": '{"x": 1}'}}]


def test_headers_say_how_it_was_routed():
    assert ipr_headers("p1", response(), 0.3) == {
        "x-ipr-prompt-id": "p1", "x-ipr-tolerance": "0.3", "x-ipr-model": "m-small",
        "x-ipr-cost-usd": "0.00012000", "x-ipr-attempts": "2", "x-ipr-router-version": "v7"}
    assert ipr_headers("p1") == {"x-ipr-prompt-id": "p1"}


def test_models_list_the_alias_first():
    out = model_list("ipr", ["a", "b"], 5)
    assert [m["id"] for m in out["data"]] == ["ipr", "a", "b"] and out["object"] == "list"


@pytest.mark.parametrize(("kind", "status"), [
    ("budget_exceeded", 429), ("unsupported", 400), ("validation", 400),
    ("unknown_model", 404), ("max_tokens_above_cap", 400), ("routing_error", 502),
    ("not_allowed", 403), ("invalid_json", 400), ("wrong_model", 502)])
def test_dead_letters_map_to_statuses(kind, status):
    e = dead_letter_error(kind, "why", "p1")
    assert e.status == status and e.code == kind
    body = e.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert "p1" in body["message"] and "why" in body["message"]


def test_backend_failures_are_502_and_timeouts_504_naming_the_prompt():
    e = backend_error("p1", "m", "HTTP 500 after 2 attempts", 500, "server_error")
    assert (e.status, e.type, e.code) == (502, "api_error", "server_error")
    t = timeout_error("p9", 2.0, {"x-ipr-prompt-id": "p9"})
    assert t.status == 504 and "p9" in t.message and t.headers == {"x-ipr-prompt-id": "p9"}
