"""A streamed answer as OpenAI's server-sent ``chat.completion.chunk`` events.

What comes back for a streamed request is a queue (``streams.gateway.channel.Pending``):
StreamChunks in order, then the outcome. The first delta carries the role; each chunk's
``model`` is the model answering; the end is a chunk with the finish reason, then, when
``stream_options.include_usage`` asks for it, one with the usage and no choices, then
``data: [DONE]``. An error after the stream began (the backend failed mid-answer, no answer in
time) is an ``error`` event, which the OpenAI SDKs raise, then ``[DONE]``.

Chunks are taken in order once each: a chunk of an earlier attempt, or one whose ``seq`` came
already (a worker that restarted the call after a crash), is skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from schemas import DeadLetter, ModelResponse, StreamChunk
from streams.gateway.errors import ApiError, backend_error, dead_letter_error, timeout_error
from streams.gateway.responses import completion_id, usage_of

DONE = b"data: [DONE]\n\n"


def sse(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def chunk_event(prompt_id: str, model: str, created: int, delta: dict[str, Any],
                finish: str | None = None) -> dict[str, Any]:
    return {"id": completion_id(prompt_id), "object": "chat.completion.chunk",
            "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def delta_of(chunk: StreamChunk) -> dict[str, Any]:
    delta: dict[str, Any] = {"content": chunk.content}
    if chunk.tool_calls:
        delta["tool_calls"] = [c.model_dump(exclude_none=True) for c in chunk.tool_calls]
    return delta


def whole_answer(response: ModelResponse) -> StreamChunk:
    """An answer that came without chunks (joined in late, a backend that does not stream) as
    one chunk."""
    message = response.message
    calls = None
    if message is not None and message.tool_calls:
        calls = [{"index": i, **c.model_dump()} for i, c in enumerate(message.tool_calls)]
    content = response.text if message is None else (message.content or "")
    return StreamChunk(prompt_id=response.prompt_id, model_id=response.model_id,
                       attempt=response.attempt, seq=0, content=content, tool_calls=calls,
                       router_version=response.router_version)


def outcome_error(outcome: DeadLetter | ModelResponse, prompt_id: str,
                  headers: dict[str, str] | None = None) -> ApiError | None:
    """The client's error for an outcome (None: an answer)."""
    if isinstance(outcome, DeadLetter):
        return dead_letter_error(outcome.error_kind, outcome.error, prompt_id, headers)
    if outcome.error is not None:
        return backend_error(prompt_id, outcome.model_id, outcome.error, outcome.error_status,
                             outcome.error_type, headers)
    return None


class Stream:
    """One streamed request's events: :meth:`first` before the response starts (an outcome
    there is still an HTTP status), then :meth:`events` as the response body."""

    def __init__(self, prompt_id: str, queue: asyncio.Queue | None, future: asyncio.Future,
                 deadline: float, timeout_s: float, include_usage: bool) -> None:
        self.prompt_id, self.queue, self.future = prompt_id, queue, future
        self.deadline, self.timeout_s = deadline, timeout_s
        self.include_usage = include_usage
        self.created = int(time.time())
        self.attempt, self.next_seq = 0, 0
        self.end: ModelResponse | None = None  # the answer, once it came

    async def _next(self) -> StreamChunk | DeadLetter | ModelResponse:
        """The next chunk in order, or the outcome (TimeoutError past the deadline)."""
        while True:
            remaining = max(0.0, self.deadline - time.monotonic())
            if self.queue is None:  # a retry that joined: the outcome only
                return await asyncio.wait_for(asyncio.shield(self.future), remaining)
            item = await asyncio.wait_for(self.queue.get(), remaining)
            if not isinstance(item, StreamChunk):
                return item
            if (item.attempt, item.seq) < (self.attempt, self.next_seq):
                continue  # an earlier attempt's, or sent again
            self.attempt, self.next_seq = item.attempt, item.seq + 1
            return item

    async def first(self) -> StreamChunk | DeadLetter | ModelResponse:
        item = await self._next()
        if isinstance(item, ModelResponse) and item.error is None:
            self.end = item
            return whole_answer(item)
        return item

    async def events(self, first: StreamChunk) -> AsyncIterator[bytes]:
        yield sse(chunk_event(self.prompt_id, first.model_id, self.created,
                              {"role": "assistant", **delta_of(first)}))
        end = self.end
        while end is None:
            try:
                item = await self._next()
            except TimeoutError:
                yield sse(timeout_error(self.prompt_id, self.timeout_s).body())
                yield DONE
                return
            if isinstance(item, StreamChunk):
                yield sse(chunk_event(self.prompt_id, item.model_id, self.created,
                                      delta_of(item)))
                continue
            error = outcome_error(item, self.prompt_id)
            if error is not None:
                yield sse(error.body())
                yield DONE
                return
            end = item
        finish = end.finish_reason or ("tool_calls" if end.message is not None
                                       and end.message.tool_calls else "stop")
        yield sse(chunk_event(self.prompt_id, end.model_id, self.created, {}, finish))
        if self.include_usage:
            yield sse({"id": completion_id(self.prompt_id), "object": "chat.completion.chunk",
                       "created": self.created, "model": end.model_id, "choices": [],
                       "usage": usage_of(end)})
        yield DONE
