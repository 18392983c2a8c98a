"""A streamed answer's pieces as StreamChunk records: the first at once, the rest batched, in
order, concatenating to the answer."""

from __future__ import annotations

import asyncio

from schemas import StreamChunk, decode
from schemas.chat import ToolCallDelta
from schemas.topics import EVENT_HEADER
from streams.worker.chunks import ChunkSink
from tests.waits import eventually


class Recorder:
    """The worker's Publisher, as far as a sink uses it: records what is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, StreamChunk, bytes, list]] = []

    async def send(self, topic, value, key, headers=None):
        self.sent.append((topic, decode(StreamChunk, value), key, headers))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def sink(flush_ms: float) -> tuple[ChunkSink, Recorder]:
    out = Recorder()
    return ChunkSink(out, "gateway.replies.a", "p1", "m", 2, "v3", flush_ms), out


def test_the_first_piece_goes_at_once_and_the_rest_in_batches():
    async def main():
        s, out = sink(flush_ms=60_000)
        assert not s.started
        await s.add("Hel")
        assert len(out.sent) == 1 and s.started  # the time to first token
        for piece in ("lo", ", ", "world"):
            await s.add(piece)
        assert len(out.sent) == 1  # within the window: held
        await s.close()
        return out.sent

    sent = asyncio.run(main())
    assert [c.content for _, c, _, _ in sent] == ["Hel", "lo, world"]
    assert [c.seq for _, c, _, _ in sent] == [0, 1]
    topic, chunk, key, headers = sent[0]
    assert (topic, key, headers) == ("gateway.replies.a", b"p1", [(EVENT_HEADER, b"StreamChunk")])
    assert (chunk.prompt_id, chunk.model_id, chunk.attempt, chunk.router_version) == (
        "p1", "m", 2, "v3")


def test_without_a_window_every_piece_is_a_chunk():
    async def main():
        s, out = sink(flush_ms=0)
        for piece in "abc":
            await s.add(piece)
        await s.close()
        return [c.content for _, c, _, _ in out.sent]

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_a_pause_in_the_stream_does_not_hold_what_came():
    async def main():
        s, out = sink(flush_ms=20)
        await s.add("a")
        await s.add("b")  # held by the window; no piece follows for a while
        await eventually(lambda: len(out.sent) == 2, timeout=10, interval=0.01)
        await s.close()
        return [c.content for _, c, _, _ in out.sent]

    assert asyncio.run(main()) == ["a", "b"]


def test_tool_call_pieces_of_one_call_are_merged():
    async def main():
        s, out = sink(flush_ms=60_000)
        await s.add("x")
        await s.add(tool_calls=[ToolCallDelta(index=0, id="c1", type="function",
                                              function={"name": "f", "arguments": '{"a'})])
        await s.add(tool_calls=[ToolCallDelta(index=0, function={"arguments": '": 1}'}),
                                ToolCallDelta(index=1, id="c2", function={"name": "g"})])
        await s.close()
        return out.sent[-1][1]

    chunk = asyncio.run(main())
    first, second = chunk.tool_calls
    assert (first.id, first.function.name, first.function.arguments) == ("c1", "f", '{"a": 1}')
    assert (second.index, second.id, second.function.name) == (1, "c2", "g")
