"""The model names a request may give, and a chat-completions body as a PromptRequest."""

from __future__ import annotations

import pytest

from streams.gateway.errors import ApiError
from streams.gateway.requests import (
    Target,
    idempotent_prompt_id,
    parse_model,
    parse_tolerance,
    to_prompt_request,
)

MODELS = ["gpt-a", "org/model-b"]


def test_the_alias_routes_among_all_models():
    assert parse_model("ipr", "ipr", MODELS) == Target()


@pytest.mark.parametrize(("name", "tau"), [("ipr-0.3", 0.3), ("ipr-0", 0.0), ("ipr-1", 1.0)])
def test_alias_dash_tau_sets_the_tolerance(name, tau):
    assert parse_model(name, "ipr", MODELS) == Target(tolerance=tau)


def test_a_model_id_pins_it():
    assert parse_model("org/model-b", "ipr", MODELS) == Target(allowed_models=["org/model-b"])


@pytest.mark.parametrize("name", ["gpt-4o", "ipr-x", "ipr0.3", "IPR"])
def test_any_other_name_is_model_not_found(name):
    with pytest.raises(ApiError) as e:
        parse_model(name, "ipr", MODELS)
    assert (e.value.status, e.value.code, e.value.param) == (404, "model_not_found", "model")
    assert "GET /v1/models" in e.value.message


@pytest.mark.parametrize("name", ["ipr-1.5", "ipr--0.1", "ipr-nan"])
def test_a_tolerance_outside_0_1_is_400(name):
    with pytest.raises(ApiError) as e:
        parse_model(name, "ipr", MODELS)
    assert e.value.status == 400 and "[0, 1]" in e.value.message


@pytest.mark.parametrize("value", [None, 3, ""])
def test_model_is_required_as_a_string(value):
    with pytest.raises(ApiError) as e:
        parse_model(value, "ipr", MODELS)
    assert e.value.status == 400 and e.value.param == "model"


def test_header_tolerance_is_checked():
    assert parse_tolerance("0.25", "x-ipr-tolerance") == 0.25
    with pytest.raises(ApiError) as e:
        parse_tolerance("high", "x-ipr-tolerance")
    assert e.value.param == "x-ipr-tolerance"


def test_idempotency_keys_map_to_one_prompt_per_tenant():
    a = idempotent_prompt_id("t1", "k")
    assert a == idempotent_prompt_id("t1", "k") != idempotent_prompt_id("t2", "k")
    assert a != idempotent_prompt_id("t1", "k2") and a.startswith("idem-")


def request(body, target=None, header=None):
    return to_prompt_request(body, prompt_id="p1", target=target or Target(), tenant="acme",
                             header_tolerance=header, reply_topic="gateway.replies.x",
                             sent_at=1.0)


BODY = {"model": "ipr", "messages": [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": "secret question"}]}


def test_a_body_becomes_a_prompt_request_with_every_parameter():
    params = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "stop": ["\n"], "seed": 7,
              "presence_penalty": 0.1, "frequency_penalty": -0.1, "user": "u1",
              "response_format": {"type": "json_object"}, "logprobs": True, "top_logprobs": 2,
              "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
              "tool_choice": "auto", "parallel_tool_calls": False, "n": 1}
    req = request({**BODY, **params, "metadata": {"app": "x"}, "session_id": "s"})
    assert req.params.for_backend() == params
    assert [m.role for m in req.messages] == ["system", "user"]
    assert (req.tenant, req.reply_to.topic, req.prompt_id) == ("acme", "gateway.replies.x", "p1")
    assert (req.metadata, req.session_id, req.tolerance) == ({"app": "x"}, "s", None)


def test_the_body_wins_over_the_header_and_the_header_over_the_name():
    assert request(BODY, Target(tolerance=0.3)).tolerance == 0.3
    assert request(BODY, Target(tolerance=0.3), header=0.5).tolerance == 0.5
    assert request({**BODY, "tolerance": 0.9}, Target(tolerance=0.3), 0.5).tolerance == 0.9


def test_a_pinned_model_and_allowed_models_must_agree():
    assert request(BODY, Target(allowed_models=["gpt-a"])).allowed_models == ["gpt-a"]
    with pytest.raises(ApiError):
        request({**BODY, "allowed_models": ["org/model-b"]}, Target(allowed_models=["gpt-a"]))


@pytest.mark.parametrize(("body", "param", "code"), [
    ({**BODY, "temprature": 1}, "temprature", "unknown_field"),
    ({**BODY, "temperature": "hot"}, "temperature", "invalid_value"),
    ({**BODY, "temperature": 3}, "temperature", "invalid_value"),
    ({**BODY, "n": 2}, "n", "unsupported"),
    ({**BODY, "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role",
     "invalid_value"),
    ({"model": "ipr"}, "messages", None),
    ({**BODY, "stream": "yes"}, "stream", "invalid_value"),
    ({**BODY, "tolerance": 2}, "tolerance", "invalid_value"),
])
def test_what_does_not_fit_is_400_naming_the_field(body, param, code):
    with pytest.raises(ApiError) as e:
        request(body)
    assert (e.value.status, e.value.param, e.value.code) == (400, param, code)
    assert "secret" not in e.value.message and "be brief" not in e.value.message


def test_a_body_that_is_not_an_object_is_400():
    with pytest.raises(ApiError) as e:
        request([1, 2])
    assert e.value.status == 400
