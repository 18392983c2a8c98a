"""The consumer of one model's topic: its calls in flight, its offsets, what it publishes
(what happens to each record, and the delivery guarantee: ``streams.worker.service``)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Iterable
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from schemas import (
    DeadLetter,
    ModelHealth,
    ModelResponse,
    QualityFeedback,
    Reservation,
    RoutedPrompt,
    SchemaError,
    Usage,
    decode,
    encode,
)
from schemas import limits as L
from schemas.topics import ROUTED_PREFIX, health_key, model_topic
from streams import tracing
from streams.control.health import ErrorStreak
from streams.control.tool_calls import tool_call_records
from streams.kafka.clients import aiokafka_config
from streams.worker import traces
from streams.worker.backends.base import Backend, Completion
from streams.worker.chunks import ChunkSink
from streams.worker.failover import next_attempt
from streams.worker.offsets import PartitionOffsets
from streams.worker.publisher import Publisher
from streams.worker.settings import WorkerSettings
from streams.worker.stats import DEAD_LETTERS, END_TO_END_SECONDS, WorkerStats, counters

log = logging.getLogger(__name__)

POLL_MS = 200  # how long one getmany waits: bounds how fast stop is noticed


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: ModelLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.loop.drain()
        for tp in revoked:
            self.loop.offsets.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("worker %s: assigned %s", self.loop.group, sorted(tp.partition for tp in assigned))


class ModelLoop:
    """The consumer of one model's topic, its calls in flight and its offsets."""

    def __init__(self, settings: WorkerSettings, worker_id: str, model_id: str,
                 backend: Backend, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.model_id = model_id
        self.backend = backend
        # a backend written before streaming answers a streamed request whole (one chunk)
        complete = getattr(backend, "complete", None)
        self.streams = complete is not None and "deltas" in inspect.signature(complete).parameters
        self.provider = traces.provider(backend)  # gen_ai.provider.name on its calls' spans
        self.topic = model_topic(model_id)
        self.group = f"{self.settings.group_prefix}.{self.topic[len(ROUTED_PREFIX):]}"
        self.stats = WorkerStats()
        self.offsets: dict[TopicPartition, PartitionOffsets] = {}
        self.inflight: set[asyncio.Task[None]] = set()
        self.replies: set[asyncio.Task[None]] = set()  # best-effort sends to reply channels
        self.failure: BaseException | None = None
        self.consumer: AIOKafkaConsumer | None = None
        END_TO_END_SECONDS.labels(model_id)  # at zero, before its first answer
        self.streak = ErrorStreak(model_id, worker_id, self.settings.unhealthy_after,
                                  self.settings.health_ttl_s)

    def _count(self, name: str, n: int = 1) -> None:
        setattr(self.stats, name, getattr(self.stats, name) + n)
        counters()[name].labels(model=self.model_id).inc(n)

    async def start(self) -> None:
        s = self.settings
        # A full loop stops polling until one call finishes; let that take a whole retry cycle.
        call_s = s.timeout_s * (s.max_retries + 1) + 30.0 * s.max_retries
        self.consumer = AIOKafkaConsumer(
            **aiokafka_config(self.settings),
            group_id=self.group,
            client_id=f"ipr-worker-{self.topic[len(ROUTED_PREFIX):]}"[:200],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # never a routed prompt of an aborted transaction (IPR_ROUTER_EXACTLY_ONCE); the same
            # as read_uncommitted when nothing is transactional
            isolation_level="read_committed",
            max_poll_interval_ms=max(300_000, int(1000 * (call_s + 60))),
            session_timeout_ms=int(1000 * s.kafka_session_timeout_s),
            heartbeat_interval_ms=int(1000 * s.kafka_session_timeout_s / 3),
        )
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        await self.consumer.start()

    async def run(self, stopping: asyncio.Event) -> None:
        assert self.consumer is not None
        try:
            while not stopping.is_set():
                if self.failure is not None:
                    raise self.failure
                free = self.settings.concurrency - len(self.inflight)
                if free <= 0:
                    await asyncio.wait(
                        self.inflight, timeout=POLL_MS / 1000, return_when=asyncio.FIRST_COMPLETED
                    )
                else:
                    batches = await self.consumer.getmany(timeout_ms=POLL_MS, max_records=free)
                    for tp, records in batches.items():
                        for record in records:
                            self._dispatch(tp, record)
                await self._commit()
        finally:
            with contextlib.suppress(Exception):
                await self.drain()
            await self.consumer.stop()

    def _dispatch(self, tp: TopicPartition, record: Any) -> None:
        offsets = self.offsets.setdefault(tp, PartitionOffsets())
        offsets.add(record.offset)
        task = asyncio.create_task(self._handle(record))
        self.inflight.add(task)
        task.add_done_callback(partial(self._finished, offsets, record.offset))

    def _finished(self, offsets: PartitionOffsets, offset: int, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            offsets.done(offset)  # a revoked partition's object: marks nothing that is committed
        elif self.failure is None:
            self.failure = exc

    async def drain(self) -> None:
        """Wait for the calls in flight (bounded), cancel the rest, commit what is done."""
        if self.inflight:
            _, late = await asyncio.wait(set(self.inflight), timeout=self.settings.drain_timeout_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("worker %s: %d call(s) cancelled on drain; they will be redelivered",
                            self.group, len(late))
                await asyncio.wait(late)
        await self._commit()

    async def _commit(self) -> None:
        assert self.consumer is not None
        for tp in self.consumer.assignment():  # past a transaction's markers, once idle
            try:
                position = await self.consumer.position(tp)
            except KafkaError:  # revoked meanwhile (IllegalStateError): its next owner's
                continue
            self.offsets.setdefault(tp, PartitionOffsets()).caught_up_to(position)
        due = {
            tp: o.commit_at for tp, o in self.offsets.items()
            if o.commit_at is not None and o.commit_at != o.committed
        }
        if not due:
            return
        try:
            await self.consumer.commit(due)
        except KafkaError as exc:  # a rebalance in progress: the records will be redelivered
            log.warning("worker %s: commit failed (%s)", self.group, type(exc).__name__)
            return
        for tp, offset in due.items():
            offsets = self.offsets.get(tp)  # revoked while the commit was in flight: gone
            if offsets is not None:
                offsets.committed = offset

    # ------------------------------------------------------------------------- one record

    async def _handle(self, record: Any) -> None:
        span = tracing.consumed(record.topic, record.partition, record.offset, self.group,
                                record.key, record.headers, attributes={"ipr.model": self.model_id})
        try:
            await self._process(record, span)
        finally:
            if span is not None:
                span.end()

    async def _process(self, record: Any, span) -> None:
        h = tracing.headers_of(span)  # what is written for the record continues its trace
        try:
            routed = decode(RoutedPrompt, record.value)
        except SchemaError as exc:
            await self._dead_letter(record, str(exc), exc.kind, span)
            return
        if routed.model_id != self.model_id:
            await self._dead_letter(
                record,
                f"model_id {routed.model_id!r} on topic {record.topic!r}, whose worker serves "
                f"{self.model_id!r} (two model ids share the topic)",
                "wrong_model", span,
            )
            return
        asked = routed.params.requested_tokens() if routed.params is not None else None
        if asked is not None and asked > self.settings.max_tokens_cap:
            await self._dead_letter(
                record, f"the request asks for {asked} output tokens; this worker's cap is "
                f"{self.settings.max_tokens_cap} (IPR_WORKER_MAX_TOKENS_CAP)",
                "max_tokens_above_cap", span)
            return
        if self.publisher.seen(routed.prompt_id, routed.attempt):
            self._count("duplicates_skipped")
            self._count("processed")
            return
        sink = self._chunk_sink(routed)
        call = traces.call_span(span, routed, self.provider)
        try:
            with tracing.active(call):  # an HTTP backend sends its traceparent on
                completion = await (self.backend.complete(routed) if sink is None
                                    else self.backend.complete(routed, sink))
        except Exception as exc:  # noqa: BLE001 - a backend bug must not lose the prompt
            log.error("model %s prompt %s: backend raised %s",
                      self.model_id, routed.prompt_id, type(exc).__name__)
            completion = Completion(
                "", 0, 0, 0.0, 0.0, error=f"backend raised {type(exc).__name__}"
            )
        traces.call_ended(call, completion)
        if sink is not None:
            await sink.close()  # the chunks leave before the answer
        # failover only before the first streamed piece: after it, the client has part of this
        # model's answer
        forward = None if completion.error is None or (sink and sink.started) else next_attempt(
            routed, completion.error, completion.retryable, self.settings.failover_attempts)
        if forward is None:
            await self._publish(routed, completion, h)
        else:
            await self._forward(routed, forward, completion.error or "", h)

    def _chunk_sink(self, routed: RoutedPrompt) -> ChunkSink | None:
        """Where a streamed request's pieces go: its reply channel (None: not streamed)."""
        if not routed.stream or routed.reply_to is None or not self.streams:
            return None
        return ChunkSink(self.publisher, routed.reply_to.topic, routed.prompt_id, self.model_id,
                         routed.attempt, routed.router_version, self.settings.stream_flush_ms)

    async def _observe(self, error: str | None) -> None:
        """Count a call's outcome toward the model's health; report when the streak says so."""
        health = self.streak.observe(error[: L.MAX_ERROR_CHARS] if error else None, time.time())
        if health is not None:
            await self._report(health)

    async def _forward(self, routed: RoutedPrompt, forward: RoutedPrompt, error: str,
                       headers=None) -> None:
        """Failover: the prompt to its next model's topic, acknowledged (with the answered
        record of this attempt) before this record's offset may be committed."""
        out = self.publisher
        key = routed.prompt_id.encode("utf-8")
        sent = [await out.send(model_topic(forward.model_id), encode(forward), key, headers)]
        sent += await out.answered_record(routed.prompt_id, routed.attempt, self.model_id)
        await asyncio.gather(*sent)
        log.info("worker %s: prompt %s failed on %s (attempt %d); forwarded to %s", self.group,
                 routed.prompt_id, self.model_id, routed.attempt, forward.model_id)
        self._count("forwarded")
        self._count("processed")
        await self._observe(error)  # a failed call, forwarded or not

    async def _publish(self, routed: RoutedPrompt, c: Completion, headers=None) -> None:
        out = self.publisher
        key = routed.prompt_id.encode("utf-8")
        response = ModelResponse(
            prompt_id=routed.prompt_id,
            model_id=routed.model_id,
            text=c.text[: L.MAX_RESPONSE_CHARS],
            tokens_in=max(0, int(c.tokens_in)),
            tokens_out=max(0, int(c.tokens_out)),
            cost_usd=max(0.0, float(c.cost_usd)),
            latency_ms=max(0.0, float(c.latency_ms)),
            error=c.error[: L.MAX_ERROR_CHARS] if c.error else None,
            message=c.message,
            finish_reason=c.finish_reason,
            usage=Usage(prompt_tokens=c.tokens_in, completion_tokens=c.tokens_out,
                        total_tokens=c.tokens_in + c.tokens_out) if c.usage_reported else None,
            error_status=c.error_status,
            error_type=c.error_type,
            retryable=c.retryable if c.error else None,
            router_version=routed.router_version,
            tenant=routed.tenant,
            attempt=routed.attempt,
            failed=routed.failed,
            # settles what the router reserved of the tenant's budget (an error releases it)
            reservation=None if routed.reserved_usd is None else Reservation(
                usd=routed.reserved_usd, at=routed.routed_at),
        )
        if c.message is not None and c.message.tool_calls:  # known to routers before the answer
            await asyncio.gather(*[await out.send(self.settings.tool_calls, v, k) for k, v in
                                   tool_call_records(self.model_id,
                                                     [t.id for t in c.message.tool_calls])])
        sent = [await out.send(self.settings.responses, encode(response), key, headers)]
        with_feedback = c.quality is not None and c.error is None
        if with_feedback:
            feedback = QualityFeedback(
                prompt_id=routed.prompt_id,
                model_id=routed.model_id,
                quality=min(1.0, max(0.0, float(c.quality))),
                source="replay",
                task=c.task or None,
            )
            sent.append(await out.send(self.settings.feedback, encode(feedback), key, headers))
        sent += await out.answered_record(routed.prompt_id, routed.attempt, self.model_id)
        if routed.reply_to is not None:  # the waiting client need not wait for the acks too
            self._reply(routed.reply_to.topic, encode(response), key)
        await asyncio.gather(*sent)  # acknowledged (acks=all) before the offset may be committed
        if routed.sent_at:
            END_TO_END_SECONDS.labels(self.model_id).observe(max(0.0, time.time() - routed.sent_at))
        self._count("responses")
        if c.error:
            self._count("errors")
        if with_feedback:
            self._count("feedback")
        self._count("processed")
        await self._observe(response.error)

    def _reply(self, topic: str, value: bytes, key: bytes) -> None:
        """The answer also to the request's reply channel (a gateway's), sent after the
        records for responses.out (the system of record), without waiting for their acks: a
        worker that dies before they are acknowledged leaves its offset uncommitted, and the
        prompt is answered again there. Best effort, in the background, so a channel that is
        gone (its gateway stopped) neither holds nor fails the loop."""

        async def deliver() -> None:
            await (await self.publisher.send(topic, value, key))

        async def send() -> None:
            try:
                await asyncio.wait_for(deliver(), 30.0)
            except (KafkaError, TimeoutError) as exc:
                log.warning("worker %s: reply to %s not sent (%s)", self.group, topic,
                            type(exc).__name__)

        task = asyncio.create_task(send())
        self.replies.add(task)
        task.add_done_callback(self.replies.discard)

    async def _report(self, health: ModelHealth) -> None:
        """Best effort: a health report that cannot be sent (no control topic, say) is logged,
        and the model's answers go on."""
        state = "healthy" if health.healthy else "unhealthy"
        try:
            sent = await self.publisher.send(
                self.settings.control, encode(health), health_key(self.model_id)
            )
            await sent
        except KafkaError as exc:
            log.error("worker %s: could not report model %s %s on %s (%s)", self.group,
                      self.model_id, state, self.settings.control, type(exc).__name__)
            return
        log.warning("worker %s: model %s reported %s (%d errors in a row)", self.group,
                    self.model_id, state, health.consecutive_errors)

    async def _dead_letter(self, record: Any, error: str, kind: str, span=None) -> None:
        letter = DeadLetter.build(
            source_topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key, value=record.value, error=error, error_kind=kind,
        )
        log.warning("worker %s: dead letter %s at %s[%d]@%d",
                    self.group, kind, record.topic, record.partition, record.offset)
        tracing.failed(span, kind)
        fut = await self.publisher.send(self.settings.prompts_dlq, encode(letter), record.key,
                                        tracing.headers_of(span))
        await fut
        DEAD_LETTERS.labels(kind).inc()
        self._count("dead_lettered")
        self._count("processed")
