"""The gateway's Kafka side: requests out to ``prompts.in``, answers back on its own reply topic.

Each gateway has one reply topic, ``gateway.replies.<instance>`` (one partition, short
retention), created at start and deleted on a graceful stop. Workers send every answer to a
request's ``reply_to`` as well as to ``responses.out`` (the system of record), and a streamed
request's chunks (StreamChunk, header ``ipr-event``) there before its answer. It is read without
a consumer group, by assignment, from its end, so several gateways side by side each get only
their own answers.

What is refused after the request left (a tenant's budget spent, an unknown model, a request
above a worker's max_tokens cap) is a dead letter on ``prompts.dlq``, from the router or a
worker. The gateway follows ``prompts.dlq`` from its end too, keeping only the letters keyed by
one of its prompts in flight: one consumer learns of both sources, and neither the router nor
the worker needs to know of gateways for it (a dead letter carries the original key, which the
gateway sets to the prompt id).

The channel is ready once the consumer is assigned and positioned on both topics; a request sent
before that could be answered before the gateway reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import (
    DeadLetter,
    ModelResponse,
    PromptRequest,
    SchemaError,
    StreamChunk,
    decode,
    encode,
)
from schemas.topics import EVENT_HEADER
from streams import tracing
from streams.gateway.settings import GatewaySettings
from streams.kafka.admin import create_topics, describe_partitions
from streams.kafka.clients import aiokafka_config

log = logging.getLogger(__name__)

Outcome = ModelResponse | DeadLetter


@dataclass
class Answered:
    """What the gateway remembers of a prompt it answered (feedback, idempotent retries)."""

    model_id: str | None
    tenant: str | None
    outcome: Outcome


@dataclass
class Pending:
    """A request in flight: its outcome's future, and for a streamed one the queue of what
    comes back in order (StreamChunks, then the outcome)."""

    future: asyncio.Future
    tenant: str | None
    chunks: asyncio.Queue | None = None
    since: float = field(default_factory=time.monotonic)


class ReplyChannel:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.topic = settings.reply_topic
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.reader: asyncio.Task | None = None
        self.ready = asyncio.Event()
        self.pending: dict[str, Pending] = {}
        self.answered: OrderedDict[str, Answered] = OrderedDict()

    async def start(self) -> None:
        s = self.settings
        await create_topics(s, [s.prompts_in, s.prompts_dlq, s.feedback], s.topic_partitions)
        await create_topics(s, [self.topic], partitions=1, configs={
            "retention.ms": str(s.reply_retention_ms), "cleanup.policy": "delete"})
        self.producer = AIOKafkaProducer(**aiokafka_config(s), acks="all",
                                         enable_idempotence=True)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(**aiokafka_config(s), group_id=None,
                                         enable_auto_commit=False)
        await self.consumer.start()
        dlq = (await describe_partitions(s, [s.prompts_dlq]))[s.prompts_dlq]
        tps = [TopicPartition(self.topic, 0)] + [TopicPartition(s.prompts_dlq, p) for p in dlq]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # positioned: an answer from now on is read
            await self.consumer.position(tp)
        self.reader = asyncio.create_task(self._read())
        self.ready.set()

    async def stop(self, delete_topic: bool = True) -> None:
        self.ready.clear()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        for client in (self.consumer, self.producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        for p in self.pending.values():
            if not p.future.done():
                p.future.cancel()
        if delete_topic:
            await self._delete_topic()

    async def _delete_topic(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**aiokafka_config(self.settings))
        try:
            await admin.start()
            await admin.delete_topics([self.topic])
        except (KafkaError, OSError) as e:
            log.warning("gateway: reply topic %s not deleted (%s)", self.topic, type(e).__name__)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    # ---------------------------------------------------------------------------- requests

    def known(self, prompt_id: str) -> Answered | None:
        return self.answered.get(prompt_id)

    async def submit(self, request: PromptRequest) -> Pending:
        """The request in flight for its prompt id (an idempotent retry joins it; a retry of
        one answered gets its outcome), else a new one, once the request is on Kafka."""
        pid = request.prompt_id
        done = self.answered.get(pid)
        if done is not None and done.tenant == request.tenant:
            future = asyncio.get_running_loop().create_future()
            future.set_result(done.outcome)
            return Pending(future, request.tenant)
        pending = self.pending.get(pid)
        if pending is not None and pending.tenant == request.tenant:
            return Pending(pending.future, request.tenant)  # the chunks went to the first caller
        assert self.producer is not None, "the channel is not started"
        pending = Pending(asyncio.get_running_loop().create_future(), request.tenant,
                          asyncio.Queue() if request.stream else None)
        self.pending[pid] = pending
        try:
            await self.producer.send_and_wait(self.settings.prompts_in, encode(request),
                                              key=pid.encode("utf-8"),
                                              headers=tracing.record_headers())
        except BaseException:
            self.pending.pop(pid, None)
            raise
        return pending

    async def send(self, topic: str, value: bytes, key: str) -> None:
        assert self.producer is not None, "the channel is not started"
        await self.producer.send_and_wait(topic, value, key=key.encode("utf-8"),
                                          headers=tracing.record_headers())

    # ---------------------------------------------------------------------------- replies

    async def _read(self) -> None:
        assert self.consumer is not None
        while True:
            try:
                batches = await self.consumer.getmany(timeout_ms=500)
            except KafkaError as e:  # the broker away for a while: keep reading
                log.warning("gateway: reading replies failed (%s)", type(e).__name__)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batches.items():
                for record in records:
                    self._take(tp.topic == self.topic, record)
            self._prune()

    def _take(self, is_reply: bool, record) -> None:
        pid = record.key.decode("utf-8", "replace") if record.key is not None else None
        pending = self.pending.get(pid) if pid is not None else None
        if pending is None:
            return
        kind = dict(record.headers or ()).get(EVENT_HEADER) if is_reply else None
        event_type = StreamChunk if kind == b"StreamChunk" else (
            ModelResponse if is_reply else DeadLetter)
        try:
            event = decode(event_type, record.value)
        except SchemaError as e:
            log.warning("gateway: undecodable %s for prompt %s (%s)", event_type.__name__, pid,
                        e.kind)
            return
        if isinstance(event, StreamChunk | ModelResponse) and event.prompt_id != pid:
            return
        if isinstance(event, StreamChunk):
            if pending.chunks is not None:
                pending.chunks.put_nowait(event)
            return
        del self.pending[pid]
        model = event.model_id if isinstance(event, ModelResponse) else None
        self.answered[pid] = Answered(model, pending.tenant, event)
        while len(self.answered) > self.settings.remember:
            self.answered.popitem(last=False)
        if not pending.future.done():
            pending.future.set_result(event)
        if pending.chunks is not None:
            pending.chunks.put_nowait(event)  # the stream's end

    def _prune(self) -> None:
        """Requests whose answer is long overdue are forgotten (a late answer is on
        responses.out); a timed-out one waits a while longer, so a retry can still get it."""
        limit = time.monotonic() - 10 * self.settings.request_timeout_s
        for pid in [pid for pid, p in self.pending.items() if p.since < limit]:
            p = self.pending.pop(pid)
            if not p.future.done():
                p.future.cancel()
