"""A streamed answer's pieces, batched into StreamChunk records on the request's reply channel.

The backend hands each delta (content, tool-call pieces) to :meth:`ChunkSink.add`. The first
goes out at once, since a client waits for its first token; later ones are merged and sent at
most every ``flush_ms`` (or when a batch reaches ``MAX_BATCH_CHARS``), so a 500-token answer is
a few dozen records, not 500. :meth:`close` sends what is left. Records are sent in order
through the worker's one idempotent producer, and the answer's ModelResponse is sent to the
reply channel after them, so the gateway reads the chunks, then the end.

Best effort like every reply: the chunks are not awaited one by one (the loop does not wait on
the broker per token) and a failed send is logged once; ``responses.out`` keeps the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.errors import KafkaError

from schemas import StreamChunk, encode
from schemas.chat import ToolCallDelta, merge_tool_calls
from schemas.topics import EVENT_HEADER
from streams.worker.publisher import Publisher

log = logging.getLogger(__name__)

MAX_BATCH_CHARS = 16_384
HEADERS = [(EVENT_HEADER, b"StreamChunk")]


class ChunkSink:
    """Where one attempt's deltas go: the reply topic of ``prompt_id``'s gateway."""

    def __init__(self, publisher: Publisher, topic: str, prompt_id: str, model_id: str,
                 attempt: int, router_version: str | None, flush_ms: float) -> None:
        self.publisher, self.topic = publisher, topic
        self.key = prompt_id.encode("utf-8")
        self.chunk = dict(prompt_id=prompt_id, model_id=model_id, attempt=attempt,
                          router_version=router_version)
        self.flush_s = flush_ms / 1000.0
        self.seq = 0  # chunks sent
        self._content: list[str] = []
        self._calls: list[ToolCallDelta] = []
        self._chars = 0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one flush at a time: the records leave in seq order
        self.failed = False

    @property
    def started(self) -> bool:
        """Whether a piece of the answer was handed over (no failover after that)."""
        return self.seq > 0 or bool(self._content or self._calls)

    async def add(self, content: str | None = None,
                  tool_calls: list[ToolCallDelta] | None = None) -> None:
        if content:
            self._content.append(content)
            self._chars += len(content)
        if tool_calls:
            self._calls.extend(tool_calls)
            self._chars += sum(len(c.function.arguments or "") for c in tool_calls
                               if c.function is not None)
        if not (self._content or self._calls):
            return
        due = self._last + self.flush_s - time.monotonic()
        if self.seq == 0 or due <= 0 or self._chars >= MAX_BATCH_CHARS:
            await self.flush()
        elif self._timer is None:  # a pause in the stream must not hold what came
            self._timer = asyncio.get_running_loop().call_later(due, self._flush_later)

    def _flush_later(self) -> None:
        self._timer = None
        self._flushing = asyncio.create_task(self.flush())

    async def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        async with self._lock:
            if not (self._content or self._calls):
                return
            chunk = StreamChunk(**self.chunk, seq=self.seq, content="".join(self._content),
                                tool_calls=merge_tool_calls(self._calls) or None)
            self._content, self._calls, self._chars = [], [], 0
            self.seq += 1
            self._last = time.monotonic()
            try:
                sent = await self.publisher.send(self.topic, encode(chunk), self.key, HEADERS)
            except KafkaError as exc:
                self._lost(exc)
                return
            sent.add_done_callback(self._delivered)

    def _delivered(self, sent: asyncio.Future) -> None:
        if not sent.cancelled() and sent.exception() is not None:
            self._lost(sent.exception())

    def _lost(self, exc: BaseException) -> None:
        if not self.failed:  # said once per stream
            log.warning("prompt %s: a stream chunk to %s was not delivered (%s); the answer "
                        "is on responses.out", self.chunk["prompt_id"], self.topic,
                        type(exc).__name__)
        self.failed = True

    async def close(self) -> None:
        """Send what is left; the chunks are handed to the producer (in order) on return."""
        if self._flushing is not None:
            await self._flushing
        await self.flush()
