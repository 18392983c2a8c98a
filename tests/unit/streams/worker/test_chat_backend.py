"""The OpenAI backend with chat requests: what the backend receives, what comes back, and how a
failure is described."""

from __future__ import annotations

import time

from aiohttp import web

from schemas import RoutedPrompt
from tests.unit.schemas.examples import CHAT, PARAMS
from tests.unit.streams.worker.test_backends import FAST, chat_error, routed, run_with_server


def chat_routed(**fields) -> RoutedPrompt:
    return RoutedPrompt(**{
        "prompt_id": "c1", "messages": CHAT, "params": PARAMS, "model_id": "m", "tolerance": 0.2,
        "threshold": 0.5, "predicted_quality": {"m": 0.8}, "estimated_cost_usd": {"m": 0.001},
        "router_version": "test", "routing_latency_ms": 1.0, "routed_at": time.time()} | fields)


TOOL_ANSWER = {
    "id": "chatcmpl-2", "object": "chat.completion", "model": "m",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [{
            "id": "call_9", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\", \"day\": 2}"}}]}}],
    "usage": {"prompt_tokens": 51, "completion_tokens": 17, "total_tokens": 68},
}


def test_every_message_and_parameter_reaches_the_backend_unchanged() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return web.json_response(TOOL_ANSWER)

    c, server, _ = run_with_server(handler, chat_routed(), **FAST)
    sent = server.requests[0]
    assert sent["messages"] == [
        {k: v for k, v in m.items() if v is not None} for m in CHAT]
    assert {k: sent[k] for k in PARAMS} == PARAMS
    assert "max_tokens" not in sent  # the request named its length (max_completion_tokens)
    assert set(sent) == {"model", "messages", *PARAMS}
    assert c.error is None and c.finish_reason == "tool_calls" and c.text == ""
    assert c.message.tool_calls[0].id == "call_9"
    assert c.message.tool_calls[0].function.arguments == "{\"city\": \"Oslo\", \"day\": 2}"
    assert (c.tokens_in, c.tokens_out, c.usage_reported) == (51, 17, True)


def test_a_text_request_is_one_user_message_with_the_workers_length() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return web.json_response({"choices": [{"message": {"content": "4"}}]})

    c, server, _ = run_with_server(handler, routed("p", "m", text="2+2?"), max_tokens=77, **FAST)
    assert server.requests[0] == {"model": "m", "max_tokens": 77,
                                  "messages": [{"role": "user", "content": "2+2?"}]}
    assert c.text == "4" and c.finish_reason is None and not c.usage_reported


def test_a_refused_request_keeps_the_backends_status_and_type_and_is_not_retried() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return web.json_response({"error": {"message": "tools not supported", "type":
                                            "invalid_request_error"}}, status=400)

    c, server, _ = run_with_server(handler, chat_routed(), **FAST)
    assert len(server.requests) == 1
    assert (c.error_status, c.error_type, c.retryable) == (400, "invalid_request_error", False)
    assert c.error == "HTTP 400: tools not supported"


def test_a_failure_after_the_retries_is_retryable_with_its_last_status() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return chat_error(503) if n < 3 else chat_error(429)

    c, server, _ = run_with_server(handler, chat_routed(), max_retries=2, **FAST)
    assert len(server.requests) == 3
    assert (c.error_status, c.error_type, c.retryable) == (429, "rate_limit", True)


def test_a_malformed_tool_call_is_a_bad_response() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return web.json_response({"choices": [{"message": {"tool_calls": [{"id": "x"}]}}]})

    c, _, _ = run_with_server(handler, chat_routed(), **FAST)
    assert (c.error_status, c.error_type, c.retryable) == (200, "bad_response", False)
