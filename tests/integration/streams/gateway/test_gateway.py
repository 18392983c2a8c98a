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
import orjson
import pytest

from schemas import ModelResponse, QualityFeedback, decode
from tests.integration.streams.gateway.stack import (
    B_TIMEOUT_S,
    TOOL_CALL,
    BackgroundLoop,
    litellm_models,
    new_stack,
    prepare,
    start_gateway,
    start_gateways,
    start_router,
    start_workers,
    stop_workers,
)
from tests.integration.streams.worker.helpers import read_all
from tests.integration.streams.worker.litellm_server import install, serve
from tests.waits import eventually


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


def test_a_tool_loop_of_three_turns_stays_on_the_model_that_made_the_call(stack):
    """Turn 1 pinned to the model that calls tools; turns 2 and 3 routed among every good model
    (the alias), each ending in a tool result: both go back to the model that made the call."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    candidates = sorted({stack.tool_model, *good(stack)})
    assert len(candidates) >= 3
    messages = [{"role": "user", "content": f"plan a trip {uuid.uuid4().hex}"}]
    turn, _ = ask(stack, model=stack.tool_model, messages=messages, tools=tools, extra_body={})
    ids = []
    for _ in range(2):
        (call,) = turn.choices[0].message.tool_calls
        messages += [turn.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        turn, headers = ask(stack, messages=messages, tools=tools,
                            extra_body={"allowed_models": candidates})
        assert turn.model == stack.tool_model
        ids.append(headers["x-ipr-prompt-id"])
    decisions = {r.key.decode(): orjson.loads(r.value) for r in asyncio.run(
        read_all(stack.bootstrap, stack.env["IPR_DECISIONS"])) if r.key.decode() in ids}
    assert [decisions[i]["variant"] for i in ids] == ["tool_loop", "tool_loop"]
    assert all(stack.tool_model in decisions[i]["reason"] for i in ids)


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


def stream(stack, name="a", **kw):
    """A streamed chat request; (its chunks, headers)."""
    kw.setdefault("extra_body", {"allowed_models": good(stack)})
    kw.setdefault("messages", [{"role": "user", "content": "hello"}])
    raw = client(stack, name).chat.completions.with_raw_response.create(
        model=kw.pop("model", "ipr"), stream=True, **kw)
    return list(raw.parse()), raw.headers


def test_a_streams_chunks_concatenate_to_the_answer_on_responses_out(stack):
    nonce = uuid.uuid4().hex
    chunks, headers = stream(stack, messages=[{"role": "user", "content": f"stream {nonce}"}],
                             stream_options={"include_usage": True})
    model, pid = headers["x-ipr-model"], headers["x-ipr-prompt-id"]
    assert headers["content-type"].startswith("text/event-stream") and model in good(stack)
    assert {c.model for c in chunks} == {model} and {c.id for c in chunks} == {f"chatcmpl-{pid}"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"from {model}"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    (sent,) = [b for b in stack.received if nonce in str(b["messages"])]
    assert sent["stream"] is True  # the worker streamed from its backend
    (answer,) = [r for r in (decode(ModelResponse, r.value) for r in asyncio.run(
        read_all(stack.bootstrap, stack.env["IPR_RESPONSES"]))) if r.prompt_id == pid]
    assert answer.text == text and answer.model_id == model


def test_a_stream_that_fails_before_its_first_chunk_is_an_http_status(stack):
    """(LiteLLM's mock streams no tool calls: a streamed tool call is tested against a local
    server in tests/unit/streams/worker/test_streaming_backend.py.)"""
    with pytest.raises(openai.InternalServerError) as failed:  # before any chunk: a status
        stream(stack, model=stack.failing_model, extra_body={})
    assert failed.value.status_code == 502


def answered_200(stack, name: str) -> float:
    metrics = httpx.get(stack.urls[name].removesuffix("/v1") + "/metrics", timeout=10).text
    line = 'ipr_gateway_requests_total{route="/v1/chat/completions",status="200"} '
    return sum(float(m.split()[-1]) for m in metrics.splitlines() if m.startswith(line))


def test_two_gateways_200_concurrent_requests_each_answered_once_by_its_own(stack, tmp_path):
    """Gateways a and d (b's short timeout is for the 504 test): 100 requests each, at once."""
    start_gateway(stack, "d", tmp_path)
    before = {n: answered_200(stack, n) for n in "ad"}

    async def all_at_once():
        clients = {n: openai.AsyncOpenAI(base_url=stack.urls[n], api_key="-", max_retries=0,
                                         timeout=120) for n in "ad"}

        async def one(i: int):
            name = "ad"[i % 2]
            raw = await clients[name].chat.completions.with_raw_response.create(
                model="ipr", messages=[{"role": "user", "content": f"hello {i}"}],
                extra_body={"allowed_models": good(stack)})
            return name, raw.headers["x-ipr-prompt-id"], raw.parse().model

        try:
            return await asyncio.gather(*(one(i) for i in range(200)))
        finally:
            for c in clients.values():
                await c.close()

    got = asyncio.run(all_at_once())
    mine = {n: {pid for g, pid, _ in got if g == n} for n in "ad"}
    assert len(mine["a"]) == len(mine["d"]) == 100
    asked = mine["a"] | mine["d"]
    for name, other in (("a", "d"), ("d", "a")):
        replies = [decode(ModelResponse, r.value).prompt_id for r in asyncio.run(
            read_all(stack.bootstrap, stack.reply_topic(name))) if not r.headers]  # no chunks
        assert mine[name] <= set(replies) and not mine[other] & set(replies)
        assert len(replies) == len(set(replies))  # each answered once
        assert answered_200(stack, name) - before[name] == 100
    sent = [r.key.decode() for r in asyncio.run(read_all(stack.bootstrap,
                                                         stack.env["IPR_PROMPTS_IN"]))]
    out = [decode(ModelResponse, r.value).prompt_id for r in asyncio.run(
        read_all(stack.bootstrap, stack.env["IPR_RESPONSES"]))]
    assert sorted(k for k in sent if k in asked) == sorted(asked)  # once each on prompts.in
    assert sorted(p for p in out if p in asked) == sorted(asked)  # once each on responses.out


async def produced_by(stack, name: str) -> list[str]:
    """The prompt ids on prompts.in whose reply channel is gateway ``name``'s."""
    return [r.key.decode() for r in await read_all(stack.bootstrap, stack.env["IPR_PROMPTS_IN"])
            if stack.reply_topic(name).encode() in r.value]


def test_a_gateway_killed_mid_traffic_fails_only_its_open_requests(stack, tmp_path):
    name = start_gateway(stack, "c", tmp_path)

    async def traffic():
        c = openai.AsyncOpenAI(base_url=stack.urls[name], api_key="-", max_retries=0,
                               timeout=120)
        a = openai.AsyncOpenAI(base_url=stack.urls["a"], api_key="-", max_retries=0,
                               timeout=120)
        slow = [asyncio.create_task(c.chat.completions.create(
            model=stack.slow_model, messages=[{"role": "user", "content": f"slow {i}"}]))
            for i in range(5)]
        fast = [await a.chat.completions.create(model="ipr", extra_body={
            "allowed_models": good(stack)}, messages=[{"role": "user", "content": f"f {i}"}])
            for i in range(3)]
        async def all_five() -> bool:
            return len(await produced_by(stack, name)) == 5

        await eventually(all_five, timeout=60)
        stack.services[name].kill()  # the five wait for the slow model
        outcomes = await asyncio.gather(*slow, return_exceptions=True)
        fast += [await a.chat.completions.create(model="ipr", extra_body={
            "allowed_models": good(stack)}, messages=[{"role": "user", "content": f"g {i}"}])
            for i in range(3)]
        await a.close()
        await c.close()
        return outcomes, fast

    outcomes, fast = asyncio.run(traffic())
    assert all(isinstance(o, openai.APIConnectionError) for o in outcomes), outcomes
    assert len(fast) == 6 and all(f.choices[0].message.content for f in fast)
    produced = asyncio.run(produced_by(stack, name))
    assert len(produced) == 5

    async def all_answered() -> bool:
        out = {decode(ModelResponse, r.value).prompt_id
               for r in await read_all(stack.bootstrap, stack.env["IPR_RESPONSES"])}
        return set(produced) <= out

    asyncio.run(eventually(all_answered, timeout=120, interval=1.0))


def test_a_graceful_stop_deletes_the_reply_topic(stack):
    from streams.kafka.admin import describe_partitions

    # uvicorn stops gracefully on SIGTERM, then re-raises it: killed by SIGTERM, after the stop
    assert stack.services["b"].stop() in (0, -signal.SIGTERM)
    left = asyncio.run(describe_partitions(stack.bootstrap))
    assert stack.reply_topic("b") not in left and stack.reply_topic("a") in left
