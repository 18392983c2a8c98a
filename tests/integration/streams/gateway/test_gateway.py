"""``ipr gateway`` end to end on a real Kafka, with the official ``openai`` SDK as the client: a
real router, workers calling LiteLLM's proxy, two gateways side by side (``stack``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from schemas import ModelResponse, QualityFeedback, decode
from tests.integration.streams.gateway.stack import (
    B_TIMEOUT_S,
    TOOL_CALL,
    BackgroundLoop,
    litellm_models,
    new_stack,
    prepare,
    start_gateways,
    start_router,
    start_workers,
    stop_workers,
)
from tests.integration.streams.worker.helpers import read_all
from tests.integration.streams.worker.litellm_server import install, serve


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, small_artifacts, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway")
    s = new_stack(f"gw-{uuid.uuid4().hex[:8]}", kafka_bootstrap, small_artifacts)
    assert len(s.ids) >= 4, s.ids
    prepare(s, small_artifacts)
    policy = subprocess.run(
        [sys.executable, "-m", "streams.cli", "policy", "set", "broke", "--budget", "0",
         "--period", "day", "--on-exhausted", "reject", "--artifacts", str(small_artifacts)],
        env={**os.environ, **s.env}, capture_output=True, text=True, timeout=120)
    assert policy.returncode == 0, policy.stderr
    loop = BackgroundLoop()
    with serve(install(), litellm_models(s), tmp) as (url, key):
        workers = loop.run(start_workers(s, url, key))
        start_router(s, small_artifacts, tmp)
        try:
            start_gateways(s, small_artifacts, tmp)
            warm_up(s)
            yield s
        finally:
            for service in s.services.values():
                service.stop()
            loop.run(stop_workers(*workers))
            loop.close()


def client(stack, name="a", tenant=None) -> openai.OpenAI:
    key = stack.keys[tenant] if tenant else "unused"
    return openai.OpenAI(base_url=stack.urls[name], api_key=key, max_retries=0, timeout=90)


def good(stack) -> list[str]:
    return [m for m in stack.ids if m not in (stack.failing_model, stack.slow_model)]


def ask(stack, name="a", tenant=None, **kw):
    """A chat request among the models that answer at once; (completion, headers)."""
    kw.setdefault("extra_body", {"allowed_models": good(stack)})
    kw.setdefault("messages", [{"role": "user", "content": "hello"}])
    raw = client(stack, name, tenant).chat.completions.with_raw_response.create(
        model=kw.pop("model", "ipr"), **kw)
    return raw.parse(), raw.headers


def warm_up(stack) -> None:
    """The first answer comes once the router has loaded its model: wait for it."""
    import time

    deadline = time.monotonic() + 240
    while True:
        try:
            ask(stack)
            return
        except (openai.APIStatusError, openai.APIConnectionError):
            assert time.monotonic() < deadline and stack.services["router"].alive(), \
                stack.services["router"].log_tail()
            time.sleep(1)


def test_a_request_reaches_the_backend_as_the_client_wrote_it(stack):
    nonce = uuid.uuid4().hex
    messages = [{"role": "system", "content": f"answer briefly {nonce}"},
                {"role": "user", "content": "what is two and two?"}]
    params = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 40, "seed": 11, "stop": ["END"],
              "presence_penalty": 0.5, "frequency_penalty": 0.25, "user": "u-42"}
    done, headers = ask(stack, model="ipr-0.3", messages=messages, **params)
    assert done.model in good(stack) and done.object == "chat.completion"
    assert done.choices[0].message.content == f"from {done.model}"
    assert done.choices[0].finish_reason == "stop" and done.usage.total_tokens > 0
    assert headers["x-ipr-model"] == done.model and headers["x-ipr-tolerance"] == "0.3"
    assert headers["x-ipr-attempts"] == "1" and headers["x-ipr-router-version"]
    assert headers["x-ipr-prompt-id"] and float(headers["x-ipr-cost-usd"]) >= 0
    (sent,) = [b for b in stack.received if nonce in str(b["messages"])]
    assert sent["messages"] == messages and sent["model"] == done.model
    assert {k: sent[k] for k in params} == params


def test_a_tool_call_round_trip(stack):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}}}}]
    pinned = stack.tool_model
    first, headers = ask(stack, model=pinned, tools=tools, tool_choice="auto", extra_body={})
    assert first.model == pinned == headers["x-ipr-model"]
    (call,) = first.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == (
        TOOL_CALL["id"], "get_weather", TOOL_CALL["function"]["arguments"])
    nonce = uuid.uuid4().hex
    messages = [{"role": "user", "content": f"weather in Paris? {nonce}"},
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second, _ = ask(stack, model=pinned, messages=messages, tools=tools, extra_body={})
    assert second.model == pinned
    (sent,) = [b for b in stack.received if nonce in str(b["messages"])]
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.id
    assert sent["messages"][2] == messages[2] and sent["tools"] == tools


def test_models_are_the_alias_and_the_artifacts_models(stack):
    assert [m.id for m in client(stack).models.list()] == ["ipr", *stack.ids]
    metrics = httpx.get(stack.urls["a"].removesuffix("/v1") + "/metrics", timeout=10).text
    assert 'ipr_gateway_requests_total{route="/v1/chat/completions",status="200"}' in metrics
    assert "ipr_gateway_request_seconds_bucket" in metrics and "ipr_gateway_in_flight" in metrics


def test_feedback_on_an_answer_is_a_quality_label(stack):
    done, headers = ask(stack)
    pid = headers["x-ipr-prompt-id"]
    url = stack.urls["a"] + "/feedback"
    ok = httpx.post(url, json={"prompt_id": pid, "quality": 0.75}, timeout=30)
    assert ok.status_code == 200, ok.text
    unknown = httpx.post(url, json={"prompt_id": "never-asked", "quality": 1}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "prompt_id"
    bad = httpx.post(url, json={"prompt_id": pid, "quality": 2}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "quality"
    labels = [decode(QualityFeedback, r.value) for r in asyncio.run(
        read_all(stack.bootstrap, stack.env["IPR_FEEDBACK"]))]
    assert [(f.model_id, f.quality, f.source) for f in labels if f.prompt_id == pid] == [
        (done.model, 0.75, "user")]


def raw(stack, body, name="a", headers=None, path="/chat/completions") -> httpx.Response:
    content = body if isinstance(body, bytes) else None
    return httpx.post(stack.urls[name] + path, content=content,
                      json=None if content is not None else body, headers=headers, timeout=90)


BODY = {"model": "ipr", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("body", "status", "param"), [
    (b"{not json", 400, None), (b"\xff\xfe", 400, None), (b"[1, 2]", 400, None),
    ({**BODY, "temprature": 1}, 400, "temprature"), ({**BODY, "temperature": "hot"}, 400,
                                                     "temperature"),
    ({**BODY, "n": 3}, 400, "n"), ({**BODY, "messages": []}, 400, "messages"),
    ({**BODY, "model": "gpt-9"}, 404, "model"), ({**BODY, "model": "ipr-7"}, 400, "model"),
    (b"{" + b" " * (1 << 21) + b"}", 413, None),
])
def test_bad_input_is_an_error_in_openais_format(stack, body, status, param):
    r = raw(stack, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert httpx.get(stack.urls["a"].removesuffix("/v1") + "/health").status_code == 200


def test_keys_budgets_and_backend_failures(stack):
    assert raw(stack, BODY, "b").status_code == 401
    wrong = raw(stack, BODY, "b", {"Authorization": "Bearer sk-ipr-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    done, _ = ask(stack, "b", tenant="acme")
    assert done.model in good(stack)
    with pytest.raises(openai.RateLimitError) as spent:  # the router dead-letters it: 429
        ask(stack, "b", tenant="broke")
    assert spent.value.code == "budget_exceeded"
    assert spent.value.response.headers["x-ipr-prompt-id"] in spent.value.message
    with pytest.raises(openai.InternalServerError) as failed:  # the backend's 500: 502
        ask(stack, model=stack.failing_model, extra_body={})
    assert failed.value.status_code == 502
    assert failed.value.response.headers["x-ipr-model"] == stack.failing_model
    assert raw(stack, BODY, path="/nowhere").json()["error"]["type"]


def test_a_request_that_outlives_its_timeout_is_504_and_still_answered(stack):
    with pytest.raises(openai.APIStatusError) as late:
        ask(stack, "b", tenant="acme", model=stack.slow_model, extra_body={})
    assert late.value.status_code == 504
    pid = late.value.response.headers["x-ipr-prompt-id"]
    assert pid in late.value.message and f"{B_TIMEOUT_S} s" in late.value.message

    async def answered() -> None:
        while not any(decode(ModelResponse, r.value).prompt_id == pid
                      for r in await read_all(stack.bootstrap, stack.env["IPR_RESPONSES"])):
            await asyncio.sleep(1)

    asyncio.run(asyncio.wait_for(answered(), 60))


def test_an_idempotency_key_makes_one_call(stack):
    nonce = uuid.uuid4().hex
    kw = {"messages": [{"role": "user", "content": f"once {nonce}"}],
          "extra_headers": {"Idempotency-Key": nonce}}
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: ask(stack, **kw), range(3)))
    again = ask(stack, **kw)
    ids = {h["x-ipr-prompt-id"] for _, h in [*answers, again]}
    assert len(ids) == 1 and len({c.choices[0].message.content for c, _ in answers}) == 1
    assert len([b for b in stack.received if nonce in str(b["messages"])]) == 1


def test_two_gateways_each_get_only_their_own_answers(stack):
    def one(i: int):
        name = "ab"[i % 2]
        return name, ask(stack, name, tenant="acme" if name == "b" else None)[1]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(16)))
    mine = {n: {h["x-ipr-prompt-id"] for g, h in got if g == n} for n in "ab"}
    assert len(mine["a"]) == len(mine["b"]) == 8
    for name, other in (("a", "b"), ("b", "a")):
        replies = [decode(ModelResponse, r.value).prompt_id for r in asyncio.run(
            read_all(stack.bootstrap, stack.reply_topic(name)))]
        assert mine[name] <= set(replies) and not mine[other] & set(replies)
        assert len(replies) == len(set(replies))  # each answered once


def test_a_graceful_stop_deletes_the_reply_topic(stack):
    from streams.kafka.admin import describe_partitions

    # uvicorn stops gracefully on SIGTERM, then re-raises it: killed by SIGTERM, after the stop
    assert stack.services["b"].stop() in (0, -signal.SIGTERM)
    left = asyncio.run(describe_partitions(stack.bootstrap))
    assert stack.reply_topic("b") not in left and stack.reply_topic("a") in left
