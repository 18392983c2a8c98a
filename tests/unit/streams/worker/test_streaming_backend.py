"""The OpenAI backend streaming a request: each piece handed over as it comes, the answer
assembled from them, and a failure retried only before the first piece."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from schemas.chat import ToolCallDelta
from streams.worker.backends.openai import OpenAIBackend
from tests.unit.streams.worker.test_backends import FAST, ChatServer, chat_error, routed


class Pieces:
    """What a backend hands over (the worker's ChunkSink has the same two members)."""

    def __init__(self) -> None:
        self.got: list[tuple[str | None, list[ToolCallDelta] | None]] = []

    @property
    def started(self) -> bool:
        return bool(self.got)

    async def add(self, content=None, tool_calls=None) -> None:
        self.got.append((content, tool_calls))


def sse(*events: dict | str) -> web.Response:
    text = "".join(f"data: {e if isinstance(e, str) else orjson.dumps(e).decode()}\n\n"
                   for e in events)
    return web.Response(text=text, content_type="text/event-stream")


def delta(finish=None, **d) -> dict:
    return {"object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


USAGE = {"object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}
CALL = [{"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "weather", "arguments": '{"ci'}}]
CALL_REST = [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]


def stream(handler, **kw):
    async def main():
        async with ChatServer(handler) as server:
            backend = OpenAIBackend(server.base_url, **{**FAST, **kw})
            pieces = Pieces()
            try:
                c = await asyncio.wait_for(backend.complete(routed("p", "m"), pieces), 30)
            finally:
                await backend.aclose()
            return c, pieces, server

    return asyncio.run(main())


def test_pieces_are_handed_over_in_order_and_make_the_answer():
    async def handler(body, n):
        return sse(delta(role="assistant", content=""), delta(content="Hel"),
                   delta(content="lo"), delta(tool_calls=CALL), delta(tool_calls=CALL_REST),
                   delta("tool_calls"), USAGE, "[DONE]")

    c, pieces, server = stream(handler)
    assert server.requests[0]["stream"] is True
    assert server.requests[0]["stream_options"] == {"include_usage": True}
    assert [p[0] for p in pieces.got] == ["Hel", "lo", None, None]
    assert c.error is None and c.text == "Hello" and c.finish_reason == "tool_calls"
    (call,) = c.message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1", "weather", '{"city": "Oslo"}')
    assert (c.tokens_in, c.tokens_out, c.usage_reported) == (9, 4, True)


def test_a_failure_before_the_first_piece_is_retried():
    async def handler(body, n):
        return chat_error(503) if n == 1 else sse(delta(content="ok"), "[DONE]")

    c, pieces, server = stream(handler, max_retries=1)
    assert len(server.requests) == 2 and c.error is None and c.text == "ok"


def test_a_failure_after_the_first_piece_ends_the_call_without_retry_or_failover():
    async def handler(body, n):
        return sse(delta(content="par"), {"error": {"message": "overloaded",
                                                    "type": "server_error"}})

    c, pieces, server = stream(handler, max_retries=3)
    assert len(server.requests) == 1 and pieces.got == [("par", None)]
    assert c.retryable is False and c.error_type == "server_error"
    assert "overloaded" in c.error and "after the stream began" in c.error


def test_an_error_event_before_any_piece_is_retryable():
    async def handler(body, n):
        return sse({"error": {"message": "busy", "type": "rate_limit"}})

    c, pieces, server = stream(handler, max_retries=1)
    assert len(server.requests) == 2 and not pieces.got
    assert (c.retryable, c.error_type) == (True, "rate_limit")
