"""A streamed request fails over to the next model only before its first piece: after it, the
client holds part of this model's answer, so the failure is the answer (an error response)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from schemas import ModelResponse, RoutedPrompt, StreamChunk, decode, encode
from schemas.topics import model_topic
from streams.worker.backends.base import Completion
from streams.worker.model_loop import ModelLoop
from streams.worker.settings import WorkerSettings
from tests.unit.schemas.examples import routed


class Sent:
    """The loop's Publisher, recording what it sends (topic, value)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes]] = []

    def seen(self, prompt_id, attempt) -> bool:
        return False

    async def send(self, topic, value, key, headers=None):
        self.records.append((topic, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def answered_record(self, *_args):
        return []


class FailsAfter:
    """A streaming backend that hands over ``pieces`` pieces, then fails retryably."""

    def __init__(self, pieces: int) -> None:
        self.pieces = pieces

    async def complete(self, routed: RoutedPrompt, deltas=None) -> Completion:
        for i in range(self.pieces):
            await deltas.add(f"piece {i} ")
        return Completion("", 3, 0, 0.0, 1.0, error="HTTP 503 after 1 attempt", retryable=True,
                          error_status=503, error_type="server_error")


def handle(pieces: int) -> list[tuple[str, bytes]]:
    prompt = routed(model_id="small", ranking=["small", "large"], stream=True,
                    reply_to={"topic": "gateway.replies.g1"})
    record = SimpleNamespace(value=encode(prompt), topic=model_topic("small"), partition=0,
                             offset=1, key=b"p-1", headers=())
    out = Sent()
    settings = WorkerSettings(kafka_bootstrap="127.0.0.1:1", failover_attempts=2,
                              unhealthy_after=0, stream_flush_ms=0)

    async def main() -> None:
        loop = ModelLoop(settings, "w", "small", FailsAfter(pieces), out)
        await loop._handle(record)
        await asyncio.gather(*loop.replies)

    asyncio.run(main())
    return out.records


def test_a_failure_before_the_first_piece_fails_over():
    records = handle(pieces=0)
    assert [t for t, _ in records] == [model_topic("large")]
    assert decode(RoutedPrompt, records[0][1]).attempt == 2


def test_a_failure_after_the_first_piece_is_the_answer():
    records = handle(pieces=2)
    topics = [t for t, _ in records]
    assert topics == ["gateway.replies.g1", "gateway.replies.g1", "responses.out",
                      "gateway.replies.g1"]
    assert [decode(StreamChunk, v).content for _, v in records[:2]] == ["piece 0 ", "piece 1 "]
    answer = decode(ModelResponse, records[-1][1])
    assert answer.error == "HTTP 503 after 1 attempt" and answer.model_id == "small"
    assert answer.retryable is True and answer.attempt == 1
