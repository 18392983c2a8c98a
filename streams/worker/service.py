"""LLM workers (`ipr worker`): one consumer group per model over `prompts.routed.<model>`.

For each model it serves, a Worker runs an aiokafka consumer in group `<group_prefix>.<model>`;
one producer is shared by all models. Per record:

    bytes that are not a RoutedPrompt     -> DeadLetter on prompts_dlq (error_kind from the codec)
    a RoutedPrompt for another model_id   -> DeadLetter, error_kind "wrong_model" (topic collision)
    a prompt_id this process answered     -> skipped, counted as duplicates_skipped
    otherwise                             -> backend.complete(); ModelResponse on responses (key
                                             prompt_id), plus QualityFeedback on feedback when the
                                             backend reports a quality (the replay backend)

After `unhealthy_after` error responses of a model in a row, and at its first success after
that, a ModelHealth report goes to the control topic (`streams.health`): routers leave the model
out while it is unhealthy.

Delivery is at-least-once. An offset is committed only after every output of its record is
acknowledged (acks=all). Up to `concurrency` records per model are in flight, so they finish out
of order: per partition the committed offset is the highest contiguous completed offset + 1.
Before partitions are revoked (a rebalance) and on stop, calls in flight are drained (bounded by
`drain_timeout_s`) and committed. A record whose outputs could not be published stops the
worker without committing it: it is consumed again on restart.

Deduplication is per process and bounded: each model remembers the last `dedupe_size` prompt_ids
it dispatched (LRU). A restart, another process of the same group, or an id older than that
window can still yield a second answer; consumers of `responses.out` should key on prompt_id.

A backend never raises for a per-prompt failure (it returns an error Completion); if one raises
anyway, the worker publishes an error response: a prompt is never lost. Prompt text and answers
are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from schemas import DeadLetter, ModelHealth, ModelResponse, QualityFeedback, RoutedPrompt
from schemas import SchemaError, decode, encode
from schemas import limits as L
from streams.backends import Backend, Completion
from streams.health import ErrorStreak, health_key
from streams.settings import WorkerSettings
from streams.topics import ROUTED_PREFIX, model_topic

log = logging.getLogger(__name__)

BackendFactory = Callable[[str], Backend]

_POLL_MS = 200  # how long one getmany waits: bounds how fast stop is noticed


class WorkerConfigError(ValueError):
    """A user mistake in the worker's configuration (models, backend, dataset, artifacts)."""


# ------------------------------------------------------------------------------------ counters


@dataclass
class WorkerStats:
    """Per-model counters (also exported to Prometheus as `ipr_worker_<name>_total{model}`)."""

    processed: int = 0  # records consumed and handled, whatever the outcome
    responses: int = 0  # ModelResponses published (errors included)
    errors: int = 0  # of which carry an error
    feedback: int = 0  # QualityFeedback published
    duplicates_skipped: int = 0
    dead_lettered: int = 0


_COUNTER_HELP = {
    "processed": "records consumed from a model topic and handled",
    "responses": "ModelResponses published (errors included)",
    "errors": "ModelResponses that carry an error",
    "feedback": "QualityFeedback events published",
    "duplicates_skipped": "records skipped: their prompt_id was already answered",
    "dead_lettered": "records sent to the dead-letter topic",
}
_COUNTERS: dict[str, Counter] = {}


def _counters() -> dict[str, Counter]:
    """Created once per process in the default registry, whatever the number of Workers."""
    if not _COUNTERS:
        for name, doc in _COUNTER_HELP.items():
            _COUNTERS[name] = Counter(f"ipr_worker_{name}", doc, ["model"])
    return _COUNTERS


# -------------------------------------------------------------------------------- bookkeeping


class _Answered:
    """The last `size` prompt_ids dispatched for one model (LRU)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, prompt_id: str) -> bool:
        """True if the id was seen already (and refresh it); else remember it and return False."""
        if prompt_id in self._ids:
            self._ids.move_to_end(prompt_id)
            return True
        if self.size > 0:
            self._ids[prompt_id] = None
            if len(self._ids) > self.size:
                self._ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)


class _PartitionOffsets:
    """Offsets of one partition dispatched but not yet committable, in arrival (= offset) order."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self.commit_at: int | None = None  # next offset to consume = last contiguous done + 1
        self.committed: int | None = None

    def add(self, offset: int) -> None:
        self._pending.append(offset)

    def done(self, offset: int) -> None:
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            head = self._pending.popleft()
            self._done.discard(head)
            self.commit_at = head + 1


# --------------------------------------------------------------------------------- one model


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: _ModelLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.loop.drain()
        for tp in revoked:
            self.loop.offsets.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("worker %s: assigned %s", self.loop.group, sorted(tp.partition for tp in assigned))


class _ModelLoop:
    """The consumer of one model's topic, its calls in flight and its offsets."""

    def __init__(self, worker: Worker, model_id: str, backend: Backend) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.model_id = model_id
        self.backend = backend
        self.topic = model_topic(model_id)
        self.group = f"{self.settings.group_prefix}.{self.topic[len(ROUTED_PREFIX):]}"
        self.stats = WorkerStats()
        self.answered = _Answered(self.settings.dedupe_size)
        self.offsets: dict[TopicPartition, _PartitionOffsets] = {}
        self.inflight: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.streak = ErrorStreak(model_id, worker.worker_id, self.settings.unhealthy_after,
                                  self.settings.health_ttl_s)

    def _count(self, name: str, n: int = 1) -> None:
        setattr(self.stats, name, getattr(self.stats, name) + n)
        _counters()[name].labels(model=self.model_id).inc(n)

    async def start(self) -> None:
        s = self.settings
        # A full loop stops polling until one call finishes; let that take a whole retry cycle.
        call_s = s.timeout_s * (s.max_retries + 1) + 30.0 * s.max_retries
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.worker.bootstrap,
            group_id=self.group,
            client_id=f"ipr-worker-{self.topic[len(ROUTED_PREFIX):]}"[:200],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=max(300_000, int(1000 * (call_s + 60))),
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
                        self.inflight, timeout=_POLL_MS / 1000, return_when=asyncio.FIRST_COMPLETED
                    )
                else:
                    batches = await self.consumer.getmany(timeout_ms=_POLL_MS, max_records=free)
                    for tp, records in batches.items():
                        for record in records:
                            self._dispatch(tp, record)
                await self._commit()
        finally:
            with contextlib.suppress(Exception):
                await self.drain()
            await self.consumer.stop()

    def _dispatch(self, tp: TopicPartition, record: Any) -> None:
        offsets = self.offsets.setdefault(tp, _PartitionOffsets())
        offsets.add(record.offset)
        task = asyncio.create_task(self._handle(record))
        self.inflight.add(task)
        task.add_done_callback(partial(self._finished, offsets, record.offset))

    def _finished(self, offsets: _PartitionOffsets, offset: int, task: asyncio.Task[None]) -> None:
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
            self.offsets[tp].committed = offset

    # ------------------------------------------------------------------------- one record

    async def _handle(self, record: Any) -> None:
        try:
            routed = decode(RoutedPrompt, record.value)
        except SchemaError as exc:
            await self._dead_letter(record, str(exc), exc.kind)
            return
        if routed.model_id != self.model_id:
            await self._dead_letter(
                record,
                f"model_id {routed.model_id!r} on topic {record.topic!r}, whose worker serves "
                f"{self.model_id!r} (two model ids share the topic)",
                "wrong_model",
            )
            return
        if self.answered.check_and_add(routed.prompt_id):
            self._count("duplicates_skipped")
            self._count("processed")
            return
        try:
            completion = await self.backend.complete(routed)
        except Exception as exc:  # noqa: BLE001 - a backend bug must not lose the prompt
            log.error("model %s prompt %s: backend raised %s",
                      self.model_id, routed.prompt_id, type(exc).__name__)
            completion = Completion(
                "", 0, 0, 0.0, 0.0, error=f"backend raised {type(exc).__name__}"
            )
        await self._publish(routed, completion)

    async def _publish(self, routed: RoutedPrompt, c: Completion) -> None:
        producer = self.worker.producer
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
            router_version=routed.router_version,
        )
        sent = [await producer.send(self.settings.responses, encode(response), key=key)]
        with_feedback = c.quality is not None and c.error is None
        if with_feedback:
            feedback = QualityFeedback(
                prompt_id=routed.prompt_id,
                model_id=routed.model_id,
                quality=min(1.0, max(0.0, float(c.quality))),
                source="replay",
                task=c.task or None,
            )
            sent.append(await producer.send(self.settings.feedback, encode(feedback), key=key))
        await asyncio.gather(*sent)  # acknowledged (acks=all) before the offset may be committed
        self._count("responses")
        if c.error:
            self._count("errors")
        if with_feedback:
            self._count("feedback")
        self._count("processed")
        health = self.streak.observe(response.error, time.time())
        if health is not None:
            await self._report(health)

    async def _report(self, health: ModelHealth) -> None:
        """Best effort: a health report that cannot be sent (no control topic, say) is logged,
        and the model's answers go on."""
        state = "healthy" if health.healthy else "unhealthy"
        try:
            sent = await self.worker.producer.send(
                self.settings.control, encode(health), key=health_key(self.model_id)
            )
            await sent
        except KafkaError as exc:
            log.error("worker %s: could not report model %s %s on %s (%s)", self.group,
                      self.model_id, state, self.settings.control, type(exc).__name__)
            return
        log.warning("worker %s: model %s reported %s (%d errors in a row)", self.group,
                    self.model_id, state, health.consecutive_errors)

    async def _dead_letter(self, record: Any, error: str, kind: str) -> None:
        letter = DeadLetter.build(
            source_topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key, value=record.value, error=error, error_kind=kind,
        )
        log.warning("worker %s: dead letter %s at %s[%d]@%d",
                    self.group, kind, record.topic, record.partition, record.offset)
        fut = await self.worker.producer.send(
            self.settings.prompts_dlq, encode(letter), key=record.key
        )
        await fut
        self._count("dead_lettered")
        self._count("processed")


# ------------------------------------------------------------------------------------- Worker


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
        *,
        bootstrap: str | None = None,
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
        self.bootstrap = bootstrap or settings.kafka_bootstrap
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"[: L.MAX_LABEL_CHARS]
        self.producer: AIOKafkaProducer | None = None  # type: ignore[assignment]
        self._loops = {m: _ModelLoop(self, m, backend_factory(m)) for m in models}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._started = False
        _counters()

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
        if self._started:
            return
        self._started = True
        self._stopping = asyncio.Event()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id="ipr-worker",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        await self.producer.start()
        try:
            for loop in self._loops.values():
                await loop.start()
        except BaseException:
            await self._close()
            raise
        self._tasks = [
            asyncio.create_task(loop.run(self._stopping), name=f"worker:{loop.model_id}")
            for loop in self._loops.values()
        ]
        log.info("worker serving %d model(s): %s", len(self._loops), ", ".join(self._loops))

    async def stop(self) -> None:
        """Stop consuming, drain and commit the calls in flight, close everything."""
        if not self._started:
            return
        self._stopping.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._close()
        self._started = False
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.error("worker loop ended with %s: %s", type(r).__name__, r)

    async def _close(self) -> None:
        for loop in self._loops.values():
            if loop.consumer is not None:
                with contextlib.suppress(Exception):
                    await loop.consumer.stop()
        closed: set[int] = set()
        for loop in self._loops.values():
            aclose = getattr(loop.backend, "aclose", None)
            if aclose is not None and id(loop.backend) not in closed:
                closed.add(id(loop.backend))
                await aclose()
        if self.producer is not None:
            await self.producer.stop()

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


# ------------------------------------------------------------------------------------ the CLI


def _card_prices(artifacts: Path | None, model_id: str) -> Any:
    """Prices from `artifacts/models/<safe>/card.json` (`cost.*_usd_per_mtok`), if present."""
    from ipr_model.artifacts import model_dir
    from streams.backends import Prices

    if artifacts is None:
        return None
    path = Path(artifacts) / model_dir(model_id) / "card.json"
    try:
        cost = json.loads(path.read_text()).get("cost") or {}
        pin, pout = cost.get("input_usd_per_mtok"), cost.get("output_usd_per_mtok")
    except (OSError, ValueError, AttributeError):
        log.info("no prices for %s (%s unreadable): cost_usd will be 0", model_id, path)
        return None
    if pin is None or pout is None:
        return None
    return Prices(float(pin), float(pout))


def build_backends(
    settings: WorkerSettings,
    models: list[str],
    backend: str,
    dataset: Path | None = None,
    artifacts: Path | None = None,
) -> tuple[list[str], BackendFactory, Callable[[], Awaitable[None]] | None]:
    """The models to serve (all of the dataset's for replay when none are given), a backend
    factory, and what to close once the worker has stopped (the shared HTTP client), if anything.
    """
    if backend == "replay":
        from ipr_model.datasets import load_dataset
        from ipr_model.errors import DatasetError
        from streams.backends import ReplayBackend

        folder = dataset or settings.replay_dataset
        if folder is None:
            raise WorkerConfigError(
                "the replay backend needs a dataset folder (--dataset or IPR_WORKER_REPLAY_DATASET)"
            )
        try:
            data = load_dataset(folder)
        except DatasetError as exc:
            raise WorkerConfigError(str(exc)) from None
        models = models or data.model_ids
        unknown = [m for m in models if m not in data.model_ids]
        if unknown:
            raise WorkerConfigError(
                f"model(s) {', '.join(unknown)} not in dataset {data.name!r}; "
                f"it has: {', '.join(data.model_ids)}"
            )
        replay = ReplayBackend(data, degrade=_degrade(settings.replay_degrade))
        return models, lambda _model: replay, None
    if backend == "openai":
        import httpx

        from streams.backends import OpenAIBackend

        if not models:
            raise WorkerConfigError("the openai backend needs at least one --model")
        client = httpx.AsyncClient(timeout=settings.timeout_s)

        def make(model_id: str) -> OpenAIBackend:
            return OpenAIBackend(
                settings.openai_base_url,
                settings.openai_api_key,
                timeout_s=settings.timeout_s,
                max_retries=settings.max_retries,
                backoff_s=settings.backoff_s,
                max_tokens=settings.max_tokens,
                prices=_card_prices(artifacts, model_id),
                client=client,
            )

        return models, make, client.aclose
    raise WorkerConfigError(f"backend must be 'openai' or 'replay', got {backend!r}")


def _degrade(spec: str | None):
    """``MODEL|TASK|MARKER`` -> the replay backend's degrade hook (None: no degradation)."""
    if not spec:
        return None
    try:
        model, task, marker = spec.split("|")
    except ValueError:
        raise WorkerConfigError(f"replay_degrade must be MODEL|TASK|MARKER, got {spec!r}") from None
    return lambda m, t, pid: m == model and t == task and marker in pid


async def serve(
    settings: WorkerSettings,
    models: list[str],
    backend: str,
    dataset: Path | None = None,
    artifacts: Path | None = None,
    stop_event: asyncio.Event | None = None,
) -> dict[str, dict[str, int]]:
    """Build the backends, create missing topics (best effort) and run until `stop_event`."""
    from streams.broker import create_topics

    models, factory, cleanup = build_backends(settings, models, backend, dataset, artifacts)
    stop_event = stop_event or asyncio.Event()
    try:
        worker = Worker(settings, models, factory)
        topics = [model_topic(m) for m in models]
        topics += [settings.responses, settings.feedback, settings.prompts_dlq]
        try:
            await asyncio.wait_for(
                create_topics(settings.kafka_bootstrap, topics, settings.topic_partitions), 60
            )
        except Exception as exc:  # noqa: BLE001 - no admin rights, or the cluster makes them
            log.warning("could not create topics (%s: %s); continuing", type(exc).__name__, exc)
        await worker.run(stop_event)
    finally:
        if cleanup is not None:
            await cleanup()
    log.info("worker stopped: %s", worker.stats_dict())
    return worker.stats_dict()


def run_worker(
    settings: WorkerSettings,
    models: list[str],
    backend: str,
    dataset: Path | None = None,
    artifacts: Path | None = None,
) -> dict[str, dict[str, int]]:
    """`ipr worker`: serve `models` until SIGINT or SIGTERM; returns the per-model counters.

    Raises WorkerConfigError for a user mistake (unknown backend or model, missing dataset).
    """

    async def main() -> dict[str, dict[str, int]]:
        if settings.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(settings.metrics_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await serve(settings, models, backend, dataset, artifacts, stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    began = time.monotonic()
    stats = asyncio.run(main())
    log.info("worker ran %.1f s", time.monotonic() - began)
    return stats
