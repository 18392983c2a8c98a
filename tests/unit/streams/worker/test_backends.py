"""LLM backends: OpenAIBackend against a real local chat-completions server, ReplayBackend on data.

The server is aiohttp on 127.0.0.1 with an OS-assigned port, started inside each test's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from ipr_model.serving.costs import Prices
from ipr_model.training.datasets import Dataset
from schemas import RoutedPrompt
from streams.worker.backends.base import Backend
from streams.worker.backends.openai import OpenAIBackend
from streams.worker.backends.replay import REPLAY_UNKNOWN_PROMPT, ReplayBackend

Handler = Callable[[dict, int], Awaitable[web.StreamResponse]]


def routed(prompt_id: str, model_id: str, text: str = "What is 2 + 2?") -> RoutedPrompt:
    """A valid RoutedPrompt for `model_id` (the only model scored)."""
    return RoutedPrompt(
        prompt_id=prompt_id, text=text, model_id=model_id, tolerance=0.2, threshold=0.5,
        predicted_quality={model_id: 0.8}, estimated_cost_usd={model_id: 0.001},
        router_version="test", routing_latency_ms=1.0, routed_at=time.time(),
    )


def chat_ok(text: str, prompt_tokens: int = 10, completion_tokens: int = 20) -> web.Response:
    return web.json_response({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def chat_error(status: int, message: str = "boom", headers: dict | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "server_error", "code": status}}
    return web.json_response(body, status=status, headers=headers)


class ChatServer:
    """A local OpenAI-compatible server: `handler(body, n)` answers the n-th request (1-based)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        return await self.handler(body, len(self.requests))

    async def __aenter__(self) -> ChatServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def run_with_server(
    handler: Handler, prompt: RoutedPrompt, **backend_kwargs: Any
) -> tuple[Any, ChatServer, OpenAIBackend]:
    async def main() -> tuple[Any, ChatServer, OpenAIBackend]:
        async with ChatServer(handler) as server:
            backend = OpenAIBackend(server.base_url, **backend_kwargs)
            try:
                completion = await asyncio.wait_for(backend.complete(prompt), 30)
            finally:
                await backend.aclose()
            return completion, server, backend

    return asyncio.run(main())


FAST = {"backoff_s": 0.01, "timeout_s": 5.0}


# ------------------------------------------------------------------------------------ OpenAI


def test_openai_success_parses_text_usage_and_prices_the_call() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return chat_ok("four", prompt_tokens=12, completion_tokens=30)

    prices = Prices(input_usd_per_mtok=2.5, output_usd_per_mtok=10.0)
    c, server, backend = run_with_server(
        handler, routed("p1", "gpt-x"), api_key="sk-test", served_name="served/gpt",
        max_tokens=64, prices=prices, **FAST,
    )
    assert c.error is None
    assert c.text == "four"
    assert (c.tokens_in, c.tokens_out) == (12, 30)
    assert c.cost_usd == pytest.approx((12 * 2.5 + 30 * 10.0) / 1e6)
    assert c.quality is None
    assert c.latency_ms > 0
    assert backend.attempts == 1
    assert server.requests == [{
        "model": "served/gpt",
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "max_tokens": 64,
    }]
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


def test_openai_model_defaults_to_model_id_and_cost_to_zero_without_prices() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return chat_ok("ok")

    c, server, _ = run_with_server(handler, routed("p1", "llama-3"), **FAST)
    assert server.requests[0]["model"] == "llama-3"
    assert "Authorization" not in server.headers[0]
    assert c.cost_usd == 0.0 and c.error is None


def test_openai_retries_5xx_then_succeeds() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return chat_error(500) if n <= 2 else chat_ok("finally")

    c, server, backend = run_with_server(handler, routed("p1", "m"), max_retries=3, **FAST)
    assert c.error is None and c.text == "finally"
    assert backend.attempts == 3 and len(server.requests) == 3


def test_openai_always_5xx_gives_an_error_completion_after_max_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return chat_error(503)

    secret = "my private prompt text 7f3a"
    with caplog.at_level(logging.DEBUG):
        c, server, backend = run_with_server(
            handler, routed("p1", "m", text=secret), max_retries=2, **FAST
        )
    assert c.error == "HTTP 503 after 3 attempts"
    assert c.text == "" and c.cost_usd == 0.0
    assert backend.attempts == 3 and len(server.requests) == 3
    assert caplog.records, "retries and the failure are logged"
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_openai_4xx_is_not_retried() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return chat_error(400, "maximum context length is 4096 tokens")

    c, server, backend = run_with_server(handler, routed("p1", "m"), max_retries=3, **FAST)
    assert backend.attempts == 1 and len(server.requests) == 1
    assert c.error == "HTTP 400: maximum context length is 4096 tokens"


def test_openai_429_honours_retry_after_capped() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return chat_error(429, headers={"Retry-After": "3600"}) if n == 1 else chat_ok("ok")

    began = time.monotonic()
    c, _, backend = run_with_server(
        handler, routed("p1", "m"), max_retries=1, max_backoff_s=0.05, **FAST
    )
    assert c.error is None and backend.attempts == 2
    assert time.monotonic() - began < 10  # the hour of Retry-After was capped


def test_openai_slow_server_times_out_after_retries() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        await asyncio.sleep(2.0)
        return chat_ok("too late")

    c, server, backend = run_with_server(
        handler, routed("p1", "m"), max_retries=1, backoff_s=0.01, timeout_s=0.2
    )
    assert backend.attempts == 2
    assert c.error is not None and c.error.startswith("timeout") and "after 2 attempts" in c.error


def test_openai_connection_refused_is_an_error_not_an_exception() -> None:
    async def main() -> tuple[Any, OpenAIBackend]:
        async with ChatServer(lambda b, n: chat_ok("x")) as server:  # type: ignore[arg-type]
            url = server.base_url
        backend = OpenAIBackend(url, max_retries=1, backoff_s=0.01, timeout_s=2.0)
        try:
            return await backend.complete(routed("p1", "m")), backend
        finally:
            await backend.aclose()

    c, backend = asyncio.run(main())
    assert backend.attempts == 2
    assert c.error == "connection error (ConnectError) after 2 attempts"


def test_openai_unexpected_body_is_an_error_not_retried() -> None:
    async def handler(body: dict, n: int) -> web.Response:
        return web.json_response({"choices": []})

    c, _, backend = run_with_server(handler, routed("p1", "m"), max_retries=3, **FAST)
    assert backend.attempts == 1
    assert c.error is not None and c.error.startswith("unexpected chat-completions body")


def test_backends_satisfy_the_protocol() -> None:
    assert isinstance(OpenAIBackend("http://127.0.0.1:1/v1"), Backend)


# ------------------------------------------------------------------------------------ Replay


def _priced_model(data: Dataset) -> tuple[int, str]:
    for j, m in enumerate(data.models):
        if m.input_usd_per_mtok and m.output_usd_per_mtok:
            return j, m.id
    raise AssertionError("zeroeval has priced models")


def test_replay_returns_the_recorded_cost_and_quality(zeroeval: Dataset) -> None:
    j, model = _priced_model(zeroeval)
    backend = ReplayBackend(zeroeval)
    for row in (0, 17, len(zeroeval) - 1):
        prompt = routed(zeroeval.ids[row], model, text=zeroeval.prompts[row])
        c = asyncio.run(backend.complete(prompt))
        assert c.error is None
        assert c.cost_usd == float(zeroeval.cost[row, j])
        assert c.quality == float(zeroeval.quality[row, j])
        assert c.task == zeroeval.tasks[row]
        assert c.tokens_in == -(-len(zeroeval.prompts[row]) // 4)
        assert c.text.startswith("[replay]")
        info = zeroeval.models[j]
        spent_out = c.cost_usd - c.tokens_in * info.input_usd_per_mtok / 1e6
        assert c.tokens_out == round(max(0.0, spent_out) * 1e6 / info.output_usd_per_mtok)


def test_replay_finds_the_prompt_by_text_when_the_id_is_unknown(zeroeval: Dataset) -> None:
    j, model = _priced_model(zeroeval)
    row = 42
    c = asyncio.run(ReplayBackend(zeroeval).complete(
        routed("not-a-row-id", model, text=zeroeval.prompts[row])
    ))
    assert c.error is None and c.cost_usd == float(zeroeval.cost[row, j])


def test_replay_unknown_prompt_and_model_are_errors(zeroeval: Dataset) -> None:
    backend = ReplayBackend(zeroeval)
    c = asyncio.run(backend.complete(routed("nope", zeroeval.model_ids[0], text="never seen")))
    assert c.error == REPLAY_UNKNOWN_PROMPT and c.quality is None
    c = asyncio.run(backend.complete(routed(zeroeval.ids[0], "no-such-model", text="x")))
    assert c.error is not None and "no-such-model" in c.error and c.quality is None
