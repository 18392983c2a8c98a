"""A streamed answer as chat.completion.chunk events: in order once each, the end with its
finish reason and usage, an error after the start as an error event."""

from __future__ import annotations

import asyncio
import time

import orjson

from schemas import DeadLetter, ModelResponse, StreamChunk
from schemas.chat import AssistantMessage, Usage
from streams.gateway.streaming import DONE, Stream


def chunk(seq: int, content: str, attempt: int = 1, model: str = "m") -> StreamChunk:
    return StreamChunk(prompt_id="p1", model_id=model, attempt=attempt, seq=seq,
                       content=content, router_version="v1")


def answer(text: str = "Hello", **kw) -> ModelResponse:
    return ModelResponse(**{"prompt_id": "p1", "model_id": "m", "text": text, "tokens_in": 3,
                            "tokens_out": 2, "cost_usd": 0.0, "latency_ms": 1.0,
                            "finish_reason": "stop", "message": AssistantMessage(content=text),
                            "usage": Usage(prompt_tokens=3, completion_tokens=2,
                                           total_tokens=5), **kw})


def run(items, include_usage=False, timeout_s=5.0):
    """The events of a stream fed ``items``; (first, [parsed events], ended with [DONE])."""

    async def main():
        queue: asyncio.Queue = asyncio.Queue()
        future = asyncio.get_running_loop().create_future()
        for item in items:
            queue.put_nowait(item)
        s = Stream("p1", queue, future, time.monotonic() + timeout_s, timeout_s, include_usage)
        first = await s.first()
        if not isinstance(first, StreamChunk):
            return first, [], False
        raw = [e async for e in s.events(first)]
        return first, [orjson.loads(e[6:]) for e in raw if e != DONE], raw[-1] == DONE

    return asyncio.run(main())


def contents(events) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if e.get("choices"))


def test_chunks_in_order_then_the_finish_reason():
    first, events, done = run([chunk(0, "Hel"), chunk(1, "lo"), answer()])
    assert done and contents(events) == "Hello"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "m"
               and e["id"] == "chatcmpl-p1" for e in events)
    assert events[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "stop"}
    assert "usage" not in events[-1]


def test_usage_at_the_end_when_asked():
    _, events, _ = run([chunk(0, "Hello"), answer()], include_usage=True)
    assert events[-1]["choices"] == [] and events[-1]["usage"] == {
        "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_a_chunk_sent_again_or_of_an_earlier_attempt_is_skipped():
    items = [chunk(0, "He"), chunk(1, "l"), chunk(0, "He"), chunk(1, "l"), chunk(2, "lo"),
             answer("Hello")]
    assert contents(run(items)[1]) == "Hello"
    items = [chunk(0, "x", attempt=2, model="small"), chunk(0, "stale", attempt=1),
             chunk(1, "y", attempt=2, model="small"), answer("xy")]
    first, events, _ = run(items)
    assert contents(events) == "xy" and first.model_id == "small"


def test_an_error_after_the_start_is_an_error_event():
    failed = answer("", error="HTTP 500 after the stream began", error_status=500,
                    error_type="server_error", retryable=False, finish_reason=None,
                    message=None, usage=None)
    _, events, done = run([chunk(0, "par"), failed])
    assert done and contents(events) == "par"
    assert events[-1]["error"]["code"] == "server_error"
    assert "after the stream began" in events[-1]["error"]["message"]


def test_no_chunk_in_time_after_the_start_is_a_timeout_event():
    _, events, done = run([chunk(0, "par")], timeout_s=0.2)
    assert done and events[-1]["error"]["code"] == "timeout"
    assert "p1" in events[-1]["error"]["message"]


def test_an_outcome_before_any_chunk_is_returned_as_it_is():
    letter = DeadLetter.build(source_topic="prompts.in", partition=0, offset=1, key=b"p1",
                              value=b"{}", error="spent", error_kind="budget_exhausted")
    first, events, _ = run([letter])
    assert isinstance(first, DeadLetter) and events == []


def test_an_answer_that_came_without_chunks_is_one_chunk():
    first, events, done = run([answer("all at once")])
    assert done and contents(events) == "all at once"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
