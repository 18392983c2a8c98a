"""LLM workers (`ipr worker`): one consumer group per model over `prompts.routed.<model>`.

For each model it serves, a Worker runs an aiokafka consumer in group `<group_prefix>.<model>`;
one producer is shared by all models. Per record:

    bytes that are not a RoutedPrompt     -> DeadLetter on prompts_dlq (error_kind from the codec)
    a RoutedPrompt for another model_id   -> DeadLetter, error_kind "wrong_model" (topic collision)
    a prompt_id (and attempt) answered    -> skipped, counted as duplicates_skipped
    otherwise                             -> backend.complete(); ModelResponse on responses (key
                                             prompt_id), plus QualityFeedback on feedback when the
                                             backend reports a quality (the replay backend)
    a retryable failure, and the ranking  -> the RoutedPrompt forwarded to the next model's topic
    has a next model (failover)              (attempt + 1, the failure in `failed`), no response
                                             (``streams.worker.failover``)

After `unhealthy_after` failed calls of a model in a row (answered with an error or forwarded),
and at its first success after that, a ModelHealth report goes to the control topic
(`streams.control.health`): routers leave the model out while it is unhealthy.

Delivery is at-least-once. An offset is committed only after every output of its record (a
forwarded prompt included) is acknowledged (acks=all). Up to `concurrency` records per model are
in flight, so they finish out of order: per partition the committed offset is the highest
contiguous completed offset + 1.
Before partitions are revoked (a rebalance) and on stop, calls in flight are drained (bounded by
`drain_timeout_s`) and committed. A record whose outputs could not be published stops the
worker without committing it: it is consumed again on restart.

Deduplication outlives a process (``streams.worker.dedupe``): every answer is also recorded on
the answered topic before its offset is committed, and a starting worker reads that history
before it takes a record. A call in flight when its process is killed (at most `concurrency` per
model) is made again; an id older than the `dedupe_size` window can be answered twice; consumers
of `responses.out` should key on prompt_id.

A backend never raises for a per-prompt failure (it returns an error Completion); if one raises
anyway, the worker publishes an error response: a prompt is never lost. Prompt text and answers
are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from schemas import limits as L
from schemas.errors import IprError
from schemas.topics import model_topic
from streams.kafka.clients import aiokafka_config
from streams.retry import Backoff, retry
from streams.worker.announce import Announcer
from streams.worker.backends.base import Backend
from streams.worker.dedupe import Answered, AnsweredLog
from streams.worker.model_loop import ModelLoop
from streams.worker.outage import KafkaOutage
from streams.worker.publisher import Publisher
from streams.worker.settings import WorkerSettings
from streams.worker.stats import WorkerStats, counters

log = logging.getLogger(__name__)

BackendFactory = Callable[[str], Backend]
_CONNECT_BACKOFF = Backoff(first_s=1.0, max_s=10.0)  # 1, 2, 4, 8, 10, 10, ... s


class WorkerConfigError(IprError, ValueError):
    """A user mistake in the worker's configuration (models, backend, dataset, artifacts)."""


class Worker:
    """Serves a list of models: a consumer per model, one shared producer.

    `stats[model_id]` holds that model's counters. Two served models may not share a topic
    (their consumer groups would be one): pass one of them only.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        models: Iterable[str],
        backend_factory: BackendFactory,
    ) -> None:
        models = list(dict.fromkeys(models))
        if not models:
            raise WorkerConfigError("a worker needs at least one model id")
        by_topic: dict[str, str] = {}
        for m in models:
            other = by_topic.setdefault(model_topic(m), m)
            if other != m:
                raise WorkerConfigError(
                    f"models {other!r} and {m!r} share topic {model_topic(m)!r}; serve one of them"
                )
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"[: L.MAX_LABEL_CHARS]
        answered = Answered(settings.dedupe_size)  # shared by the models served
        self.answered_log = AnsweredLog(settings, answered)
        self.publisher = Publisher(answered, self.answered_log)
        self._loops = {m: ModelLoop(settings, self.worker_id, m, backend_factory(m),
                                    self.publisher) for m in models}
        self.announcer = Announcer(settings.control, self.worker_id, models,
                                   settings.serving_ttl_s, self.publisher)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.outage = KafkaOutage("worker", settings)  # an outage in two lines, per worker
        self._watch: asyncio.Task[None] | None = None
        self._started = False
        counters()

    @property
    def models(self) -> list[str]:
        return list(self._loops)

    @property
    def stats(self) -> dict[str, WorkerStats]:
        return {m: loop.stats for m, loop in self._loops.items()}

    def group_of(self, model_id: str) -> str:
        """The consumer group of a served model: `<group_prefix>.<model as in its topic>`."""
        return self._loops[model_id].group

    def stats_dict(self) -> dict[str, dict[str, int]]:
        return {m: asdict(s) for m, s in self.stats.items()}

    async def start(self) -> None:
        """Connect (retrying while the broker does not answer, up to ``start_timeout_s``) and
        start a consuming task per model."""
        if self._started:
            return
        self._started = True
        self._stopping = asyncio.Event()

        async def connect() -> None:
            try:
                await self._connect()
            except KafkaConnectionError:
                await self._disconnect()
                raise

        def retrying(exc: BaseException, attempt: int, _delay: float) -> None:
            if attempt == 1:  # once: the retries are not news
                log.warning("worker: the broker did not answer while starting (%s); retrying "
                            "for up to %.0f s", exc, self.settings.start_timeout_s)

        try:
            await retry(connect, retry_on=KafkaConnectionError, backoff=_CONNECT_BACKOFF,
                        deadline_s=self.settings.start_timeout_s, on_retry=retrying)
        except BaseException:
            await self._close()
            self._started = False
            raise
        self.outage.install()
        self._watch = asyncio.create_task(self.outage.watch(self._stopping), name="worker:kafka")
        self._tasks = [
            asyncio.create_task(loop.run(self._stopping), name=f"worker:{loop.model_id}")
            for loop in self._loops.values()
        ]
        self._tasks.append(asyncio.create_task(self.announcer.run(self._stopping),
                                               name="worker:announce"))
        for loop in self._loops.values():
            log.warning("worker: consuming %s from %s as group %s", loop.topic,
                        self.settings.kafka_bootstrap, loop.group)

    async def _connect(self) -> None:
        self.publisher.producer = producer = AIOKafkaProducer(
            **aiokafka_config(self.settings),
            client_id="ipr-worker",
            acks="all",
            enable_idempotence=True,
            # No linger: a response and its answered record, appended together, leave in one
            # request to their broker (records still batch while a request is in flight).
            linger_ms=0,
        )
        await producer.start()
        await self.answered_log.start()
        for loop in self._loops.values():
            await loop.start()

    async def stop(self) -> None:
        """Stop consuming, drain and commit the calls in flight, close everything."""
        if not self._started:
            return
        self._stopping.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.publisher.producer is not None:
            await self.announcer.withdraw()
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        await self._close()
        self.outage.remove()
        self._started = False
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.error("worker loop ended with %s: %s", type(r).__name__, r)

    async def _disconnect(self) -> None:
        await self.answered_log.stop()
        for loop in self._loops.values():
            if loop.consumer is not None:
                with contextlib.suppress(Exception):
                    await loop.consumer.stop()
        if self.publisher.producer is not None:
            with contextlib.suppress(Exception):
                await self.publisher.producer.stop()
            self.publisher.producer = None

    async def _close(self) -> None:
        await self._disconnect()
        closed: set[int] = set()
        for loop in self._loops.values():
            aclose = getattr(loop.backend, "aclose", None)
            if aclose is not None and id(loop.backend) not in closed:
                closed.add(id(loop.backend))
                await aclose()

    async def run(self, stop_event: asyncio.Event) -> None:
        """Run until `stop_event` is set; raise if a model's loop fails (e.g. publishing did)."""
        await self.start()
        failed: BaseException | None = None
        try:
            waiter = asyncio.create_task(stop_event.wait())
            done, _ = await asyncio.wait(
                [waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            for task in done:
                if task is not waiter and not task.cancelled() and task.exception() is not None:
                    failed = task.exception()
        finally:
            await self.stop()
        if failed is not None:
            raise failed

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
