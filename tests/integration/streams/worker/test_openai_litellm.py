"""The `openai` backend against a real OpenAI-compatible server this project did not write
(LiteLLM's proxy from PyPI, answering mock responses): success, 429 with Retry-After, 5xx and
timeouts retried, a 400 not retried."""

from __future__ import annotations

import asyncio
import time

import httpx

from schemas import RoutedPrompt
from streams.worker.backends.openai import OpenAIBackend
from tests.integration.streams.worker.litellm_server import install, model_entry, serve

COOLDOWN_S = 2  # LiteLLM's Retry-After while a rate-limited model cools down


def prompt(model_id: str) -> RoutedPrompt:
    return RoutedPrompt(
        prompt_id=f"p-{model_id}", text="What is 2+2?", model_id=model_id, tolerance=0.2,
        threshold=0.5, predicted_quality={model_id: 0.7}, estimated_cost_usd={model_id: 0.001},
        router_version="test-v1", routing_latency_ms=1.0, routed_at=time.time(),
    )


def test_openai_backend_against_litellm(tmp_path) -> None:
    models = [
        model_entry("ok", "four"),
        model_entry("rate", "litellm.RateLimitError"),
        model_entry("boom", "litellm.InternalServerError"),
        model_entry("slow", "late", mock_delay=5),
    ]
    # A rate-limited model cools down at once (even alone in its group): LiteLLM then answers 429
    # with Retry-After: COOLDOWN_S until the cooldown ends.
    with serve(install(), models, tmp_path, cooldown_time=COOLDOWN_S,
               allowed_fails_policy={"RateLimitErrorAllowedFails": 0}) as (url, key):

        async def call(model_id: str, **options) -> tuple[OpenAIBackend, object]:
            async with httpx.AsyncClient() as client:
                backend = OpenAIBackend(url, key, client=client, backoff_s=0.01,
                                        max_backoff_s=30.0, **options)
                return backend, await backend.complete(prompt(model_id))

        async def main():
            return await asyncio.gather(
                call("ok"), call("rate", max_retries=2), call("boom", max_retries=2),
                call("slow", max_retries=1, timeout_s=0.5), call("unknown-model", max_retries=2),
            )

        ok, rate, boom, slow, unknown = asyncio.run(main())

    backend, c = ok
    assert (c.text, c.error, c.retryable) == ("four", None, False)
    assert c.tokens_in > 0 and c.tokens_out > 0 and backend.attempts == 1

    backend, c = rate  # 429, then 429 with Retry-After (cooldown), then 429
    assert c.error.startswith("HTTP 429 after 3 attempts") and c.retryable and not c.text
    assert backend.attempts == 3 and backend.server_delays >= 1

    backend, c = boom
    assert c.error.startswith("HTTP 500 after 3 attempts") and c.retryable
    assert backend.attempts == 3 and backend.server_delays == 0

    backend, c = slow
    assert c.error.startswith("timeout (ReadTimeout, 0.5 s) after 2 attempts") and c.retryable
    assert backend.attempts == 2

    backend, c = unknown  # LiteLLM: 400, no such model: not retried, not failed over
    assert c.error.startswith("HTTP 400") and not c.retryable and backend.attempts == 1
