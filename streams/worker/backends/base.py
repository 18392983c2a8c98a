"""What a worker's LLM backend is: something that answers one RoutedPrompt.

    Backend        the protocol: `async complete(routed, deltas=None) -> Completion`, optional
                   `aclose()`; given `deltas` (a streamed request), the backend streams and
                   hands each piece of the answer to it as it comes
    OpenAIBackend  (`openai.py`) any OpenAI-compatible chat-completions endpoint (vLLM, OpenAI,
                   a gateway)
    ReplayBackend  (`replay.py`) answers from a dataset's recorded outcomes (cost and quality),
                   for the demo and the benchmarks

A backend never raises for a per-prompt failure: it returns a Completion with `error` set, so the
worker publishes an error response instead of losing the prompt, or, when `retryable` is set,
forwards the prompt to the next model of its ranking (`streams.worker.failover`). Prompt text and
answers are user data: they are never logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ipr_model.serving.costs import estimate_tokens
from schemas import RoutedPrompt
from schemas import limits as L
from schemas.chat import AssistantMessage, ToolCallDelta


@dataclass
class Completion:
    """One answer (or failure) of a backend."""

    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: float
    error: str | None = None
    quality: float | None = None  # a recorded quality label (replay only)
    task: str | None = None  # the prompt's task, when the backend knows it (replay only)
    # whether another model might answer (timeouts, 429, 5xx after the retries): failover
    retryable: bool = False
    message: AssistantMessage | None = None  # content and tool calls, as the backend gave them
    finish_reason: str | None = None
    usage_reported: bool = False  # tokens_in/out are the backend's own count
    error_status: int | None = None  # the backend's HTTP status of a failure (0: no answer)
    error_type: str | None = None  # the backend's error type (rate_limit, timeout, ...)
    response_model: str | None = None  # the model the backend says answered (its "model")


class Deltas(Protocol):
    """Where a streaming backend hands the pieces of an answer (``streams.worker.chunks``)."""

    @property
    def started(self) -> bool: ...

    async def add(self, content: str | None = None,
                  tool_calls: list[ToolCallDelta] | None = None) -> None: ...


@runtime_checkable
class Backend(Protocol):
    async def complete(self, routed: RoutedPrompt, deltas: Deltas | None = None) -> Completion:
        ...


def elapsed_ms(began: float) -> float:
    return max(0.0, (time.monotonic() - began) * 1000.0)


def prompt_tokens(routed: RoutedPrompt) -> int:
    """The request's tokens before the call, by the datasets' convention (chars / 4)."""
    return estimate_tokens("\n".join(m.text() for m in routed.conversation()))


def clip_error(message: str) -> str:
    return (message or "unknown error")[: L.MAX_ERROR_CHARS]
