"""The router service: a thin Faust agent around :func:`streams.router.routing.route_records`.

Micro-batches of ``prompts.in`` are scored off the event loop (one scorer call per batch), then
every routed prompt, decision and dead letter is sent. A batch is acknowledged only once all of its
outputs are on Kafka, so offsets are committed only for records whose outputs were delivered
(at-least-once). Deliveries are awaited in the background while the next batch is scored: the
encoder never waits for the broker's round trip, and at most one batch is in flight. With
``IPR_ROUTER_EXACTLY_ONCE`` a batch's outputs (the shadow's decisions too) and input offsets are
queued for its input partitions' next transactions instead (:mod:`streams.router.transactions`:
the batches routed while one commits share the next), and acknowledged once committed.

Which version a starting router serves: the one last announced on ``router.control`` (every
router of the group serves one version, so a restart must not split the group), loaded before the
first batch; its ``--artifacts`` only when nothing is announced, or when it is that version, or
when the announced one cannot be loaded. A new directory goes live by being announced (``ipr
shadow start DIR``, then ``ipr shadow promote``). ``load_scorer`` says in one line which and why.

``follow_control`` reads ``router.control``: new artifact versions (hot swap between batches; from
the announced location, or rebuilt from the artifact-files topic: ``streams.control.versions``),
model health reports (``streams.control.health``) and the version to score in shadow
(``streams.router.shadow``:
its decisions go to ``router.shadow`` after each batch's live outputs). ``Tenants.follow`` keeps
the tenants' policies and spend (``streams.router.tenants``), which ``SpendCounter`` counts from
``responses.out`` (``streams.router.spend``); the agent routes its first batch once both topics
have been read to their end. Every dead letter is logged with its prompt id (the record's key)
and kind, never its text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from functools import partial
from pathlib import Path

import faust
from aiokafka.errors import KafkaError
from faust.types import TP

from ipr_model.artifacts.manifest import read_manifest
from ipr_model.errors import ArtifactError
from schemas import ModelHealth, ModelUpdate, SchemaError, WorkerServing, decode, encode
from schemas.topics import (
    CONTROL_KEY,
    SERVING_KEY_PREFIX,
    SHADOW_KEY,
    is_health_key,
    is_serving_key,
    spend_key,
)
from streams.control.health import HealthBoard
from streams.control.serving import ServingBoard
from streams.control.topic import control_history, read_control
from streams.control.versions import can_read, ensure_topic, local_versions, prune_received, receive
from streams.kafka.admin import KafkaAdminError
from streams.router import metrics, traces
from streams.router.routing import BatchResult, Record, route_records
from streams.router.scorers import ScorerHolder
from streams.router.settings import RouterSettings
from streams.router.shadow import Shadow
from streams.router.spend import SpendCounter
from streams.router.tenants import Tenants
from streams.router.tool_loop import ToolCalls, may_answer_a_call
from streams.router.transactions import Output, Transactions, by_partition

log = logging.getLogger(__name__)


class Router:
    """The router's topics, its scorer and what it knows of model health, for one Faust app."""

    def __init__(self, app: faust.App, settings: RouterSettings) -> None:
        self.app = app
        self.settings = settings
        # Raw bytes in: decoding happens per event inside the agent, so bad input is
        # dead-lettered with its reason instead of throwing into the stream (where Faust would
        # acknowledge and lose it).
        self.prompts_in = self._topic(settings.prompts_in)
        self._topics: dict[str, faust.TopicT] = {}
        for name in (settings.decisions, settings.prompts_dlq):
            self.topic(name)
        self.transactions = (Transactions(
            settings, settings.app_id, settings.prompts_in, owns=self.owns,
            interval_s=settings.transaction_interval_ms / 1000.0)
            if settings.exactly_once else None)
        self.scorers = ScorerHolder(settings.artifacts, settings.encoder_threads)
        self.health = HealthBoard()  # updated by follow_control, read between batches
        self.workers = ServingBoard()  # what live workers serve, likewise
        self._unserved_said: frozenset[str] = frozenset()
        self.shadow = Shadow(settings, self.scorers)  # started and stopped by follow_control
        self.tenants = Tenants(settings)  # policies and spend, followed by Tenants.follow
        self.tool_calls = ToolCalls(settings)  # which model made each tool call, followed
        self.spend_counter = SpendCounter(settings, self.tenants)
        app.on_partitions_revoked.connect(self._revoked)
        self.serving = asyncio.Event()  # set once the start-up version is chosen and loaded
        self._start_announcement: tuple[int, int] | None = None  # (partition, offset) it weighed

    def _topic(self, name: str) -> faust.TopicT:
        return self.app.topic(name, key_type=bytes, value_type=bytes)

    def topic(self, name: str) -> faust.TopicT:
        """The topic object for an output topic's name, created once."""
        if name not in self._topics:
            self._topics[name] = self._topic(name)
        return self._topics[name]

    async def _revoked(self, _app, revoked=(), **_kwargs) -> None:
        self.tenants.revoked(tp.partition for tp in revoked if tp.topic == self.settings.prompts_in)

    def owns(self, partition: int) -> bool:
        """Whether this router is assigned ``partition`` of ``prompts.in`` now."""
        return TP(self.settings.prompts_in, partition) in self.app.consumer.assignment()

    async def route_prompts(self, stream) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        # Batches whose outputs are on their way; at-least-once, one while the next is scored.
        pending: deque[asyncio.Future] = deque()
        depth = 1 if self.transactions is None else s.max_uncommitted_batches
        await self.tenants.ready.wait()  # every policy and the spend so far, before routing
        await self.serving.wait()  # the announced version, not --artifacts for a first batch
        async for events in stream.noack_take(s.batch_size, within=s.batch_timeout_ms / 1000.0):
            taken_ns = time.time_ns()
            records = [
                Record(e.message.topic, e.message.partition, e.message.offset, e.key, e.value)
                for e in events
            ]
            scorer = self.scorers.current()  # a hot swap takes effect between batches
            now = time.time()
            unhealthy = self.health.unhealthy(now)
            unserved = self._unserved(scorer.model_ids, now) if s.served_only else ()
            if any(may_answer_a_call(r.value) for r in records):
                await self.tool_calls.caught_up(s.tool_call_wait_s)
            if s.reserve_budgets:  # a partition new here: what its last owner reserved, read
                await self.tenants.reservations_caught_up({r.partition for r in records})
            result = await loop.run_in_executor(None, partial(
                route_records, records, scorer, s.default_tolerance, s.variant, s.delta,
                unhealthy, s.explore_share, self.tenants, unserved, s.scored_view,
                self.tool_calls, s.reserve_budgets))
            for r in result.reservations:  # the next batch adds to them, delivered or not yet
                self.tenants.record_spend(r)
            spans = traces.start(events, result, taken_ns, s.app_id)
            outputs = self._outputs(result, spans)
            shadow = self.shadow.scorer() is not None
            if self.transactions is None:  # sent now, acknowledged once delivered
                sends = [await self.topic(t).send(key=k, value=v, headers=h, force=True)
                         for _, (t, k, v, h) in outputs]
                pending.append(asyncio.ensure_future(_ack_when_delivered(stream, events, sends)))
            else:  # queued for the partitions' next transactions, the shadow's decisions too
                if shadow:
                    outputs += await self._shadow_outputs(result, scorer, unhealthy, unserved)
                pending.append(asyncio.ensure_future(
                    self._commit_exactly_once(stream, events, records, outputs)))
            while pending and (len(pending) > depth or pending[0].done()):
                await pending.popleft()  # raises if that batch failed to deliver: never acked
            traces.end(spans)
            metrics.observe(result, len(records), scorer.reference)
            if shadow and self.transactions is None:  # after the live outputs, never holding them
                await self._send_shadow(result, scorer, unhealthy, unserved)

    async def _shadow_outputs(self, result: BatchResult, live, unhealthy,
                              unserved) -> list[tuple[int, Output]]:
        """The shadow version's decisions on the batch, for ``router.shadow`` (none, logged and
        counted, when they cannot be made)."""
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                None, self.shadow.decisions, result.routed, live, unhealthy, unserved)
        except Exception as e:  # noqa: BLE001 - nothing of the shadow's may stop the agent
            metrics.SHADOW_FAILURES.inc()
            log.error("shadow decisions of a batch were not made: %s", type(e).__name__)
            return []
        return [(d.partition, (self.settings.shadow, d.key, encode(d.decision), None))
                for d in out]

    async def _send_shadow(self, result: BatchResult, live, unhealthy, unserved) -> None:
        """The shadow version's decisions on the batch, to ``router.shadow`` (their delivery is
        not awaited: a failure is logged and counted, and the batch is acknowledged anyway)."""
        try:
            for _, (topic, key, value, _) in await self._shadow_outputs(result, live, unhealthy,
                                                                     unserved):
                fut = await self.topic(topic).send(key=key, value=value, force=True)
                fut.add_done_callback(_shadow_delivered)
        except Exception as e:  # noqa: BLE001 - nothing of the shadow's may stop the agent
            metrics.SHADOW_FAILURES.inc()
            log.error("shadow decisions of a batch were not sent: %s", type(e).__name__)

    def _outputs(self, result: BatchResult, spans: traces.Spans) -> list[tuple[int, Output]]:
        """Every record the batch produces, with the partition of the input it came from (and
        its prompt's trace in its headers)."""
        s = self.settings
        out: list[tuple[int, Output]] = []
        for r in result.routed:
            h = traces.headers(spans, r.partition, r.offset)
            out.append((r.partition, (r.topic, r.key, encode(r.prompt), h)))
            out.append((r.partition, (s.decisions, r.key, encode(r.decision), h)))
        for v in result.reservations:  # in the partition's transaction, exactly-once
            out.append((v.partition, (s.reservations, spend_key(
                v.tenant, v.period, v.period_start, v.partition), encode(v), None)))
        for d in result.dead:
            key = d.key.encode() if d.key is not None else None
            h = traces.headers(spans, d.partition, d.offset)
            out.append((d.partition, (s.prompts_dlq, key, encode(d), h)))
            # The codec's reasons name fields, never values; a scoring error's may quote the text.
            reason = "" if d.error_kind == "routing_error" else f": {d.error}"
            log.warning("dead letter %s: key %s at %s[%d]@%d%s", d.error_kind, d.key,
                        d.source_topic, d.partition, d.offset, reason)
        return out

    async def _commit_exactly_once(self, stream, events, records: list[Record],
                                   outputs: list[tuple[int, Output]]) -> None:
        next_offsets: dict[int, int] = {}
        for rec in records:
            next_offsets[rec.partition] = max(next_offsets.get(rec.partition, 0), rec.offset + 1)
        assert self.transactions is not None
        await self.transactions.commit_batch(by_partition(outputs), next_offsets)
        for event in events:
            await stream.ack(event)

    async def load_scorer(self) -> None:
        """When the worker starts, before the first batch: choose the version to serve (the
        module's rule), load it off the event loop, and say in one line which and why."""
        loop, s = asyncio.get_running_loop(), self.settings
        try:
            why = await self._start_version()
            scorer = await loop.run_in_executor(None, self.scorers.current)
        finally:
            self.serving.set()
        log.warning("router: consuming %s from %s as group %s; serving version %s (%d models) "
                    "from %s (%s)", s.prompts_in, s.kafka_bootstrap, s.app_id, scorer.version,
                    len(scorer.model_ids), self.scorers.root, why)

    async def _start_version(self) -> str:
        """Load the version last announced on ``router.control`` unless it is --artifacts' own
        (then, or when it cannot be loaded, the caller loads --artifacts); returns why."""
        s, loop = self.settings, asyncio.get_running_loop()
        given = f"from --artifacts {s.artifacts}"
        try:
            history = await control_history(s)
        except KafkaError as e:
            return f"{given}; {s.control} could not be read ({type(e).__name__})"
        announced = [m for m in history if m.key == CONTROL_KEY.encode()]
        if not announced:
            return f"{given}; nothing announced on {s.control}"
        msg = announced[-1]
        self._start_announcement = (msg.partition, msg.offset)  # follow_control: not again
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(msg.timestamp / 1000))
        try:
            update = decode(ModelUpdate, msg.value)
        except SchemaError as e:
            return f"{given}; the announcement at offset {msg.offset} of {s.control} is " \
                   f"malformed: {e}"
        mine = read_manifest(s.artifacts, verify=False).version
        if mine == update.version:
            return f"{given}, the version announced on {s.control} at {when}"
        root = await self._version_root(update)
        if root is None or not await loop.run_in_executor(
                None, partial(self.scorers.swap, root, update.sha256, quiet=True)):
            return f"{given}; version {update.version}, announced on {s.control} at {when}, " \
                   "could not be loaded (logged)"
        return f"announced on {s.control} at {when}, not --artifacts {s.artifacts} ({mine}): " \
               "every router of a group serves the announced version"

    async def follow_control(self) -> None:
        """Every router process reads all of ``router.control`` (no consumer group: each must see
        every update). On start it applies only the latest message of each key (the latest
        version, each model's latest health report); afterwards every new one."""
        s = self.settings
        if s.versions_from != "filesystem":
            try:
                await ensure_topic(s, s.artifacts_topic)
            except KafkaAdminError as e:  # it may exist already, created by the feedback service
                log.warning("could not create the artifact-files topic %s: %s",
                            s.artifacts_topic, e)
        await self.serving.wait()  # the start-up version is load_scorer's to choose
        async for msg in read_control(self.settings):
            await self._apply_control(msg)

    async def _apply_control(self, msg) -> None:
        if (msg.partition, msg.offset) == self._start_announcement:
            return  # weighed (served, or refused and logged) by load_scorer
        if msg.key == SHADOW_KEY.encode():
            await self._apply_shadow(msg)
            return
        if is_serving_key(msg.key):
            self._apply_serving(msg)
            return
        health = is_health_key(msg.key)
        try:
            update = decode(ModelHealth if health else ModelUpdate, msg.value)
        except SchemaError as e:
            log.error("ignored a malformed control message at offset %d: %s", msg.offset, e)
            return
        if isinstance(update, ModelHealth):
            self._apply_health(update)
        elif update.version != self.scorers.current_version():
            root = await self._version_root(update)
            if root is None:
                return
            swapped = await asyncio.get_running_loop().run_in_executor(
                None, self.scorers.swap, root, update.sha256
            )
            if swapped and root.parent == self.settings.versions_dir:  # a received version
                prune_received(root.parent, self.settings.keep_versions, root)

    async def _apply_shadow(self, msg) -> None:
        """Start (or replace) the shadow version, loaded like a live one; a tombstone stops it."""
        if msg.value is None:
            self.shadow.stop()
            return
        try:
            update = decode(ModelUpdate, msg.value)
        except SchemaError as e:
            log.error("ignored a malformed shadow message at offset %d: %s", msg.offset, e)
            return
        holder, loop = self.shadow.holder, asyncio.get_running_loop()
        if update.version == holder.current_version():
            return
        await loop.run_in_executor(None, self.scorers.current)  # the live one first: its encoder
        root = await self._version_root(update, holder)
        if root is not None:
            await loop.run_in_executor(None, holder.swap, root, update.sha256)

    async def _version_root(self, update: ModelUpdate,
                            holder: ScorerHolder | None = None) -> Path | None:
        """Where to load an announced version from: its location when this host may and can read
        it, else the copy rebuilt from the artifact-files topic (None: refused, logged and
        counted by ``holder``, the live one by default)."""
        s = self.settings
        if s.versions_from == "filesystem" or (s.versions_from == "auto" and can_read(update)):
            return Path(update.location)
        local = local_versions(s.artifacts, self.scorers.root, s.versions_dir)
        try:
            return await receive(s, s.artifacts_topic, update, local, s.versions_dir)
        except (ArtifactError, KafkaError, OSError) as e:
            (holder or self.scorers).refuse(f"{s.artifacts_topic} (version {update.version})", e)
            return None

    def _apply_serving(self, msg) -> None:
        worker = msg.key.decode("utf-8", "replace")[len(SERVING_KEY_PREFIX):]
        try:
            announcement = None if msg.value is None else decode(WorkerServing, msg.value)
        except SchemaError as e:
            log.error("ignored a malformed serving announcement at offset %d: %s", msg.offset, e)
            return
        self.workers.apply(worker, announcement, time.time())
        self._unserved(self.scorers.current().model_ids, time.time())

    def _unserved(self, known, now: float) -> frozenset[str]:
        """The models no live worker serves now; a line when that changes (an announcement, a
        tombstone, or one expiring), not per announcement."""
        unserved = self.workers.unserved(known, now)
        if unserved != self._unserved_said:
            self._unserved_said = unserved
            log.warning("models served by a live worker: %d of %d (left out: %s)",
                        len(known) - len(unserved), len(known), ", ".join(sorted(unserved))
                        or "none")
        return unserved

    def _apply_health(self, report: ModelHealth) -> None:
        now = time.time()
        if not self.health.apply(report, now):
            return
        state = "healthy" if report.healthy else "unhealthy"
        metrics.HEALTH_REPORTS.labels(report.model_id, state).inc()
        if report.model_id in self.health.unhealthy(now):
            log.warning("model %s reported unhealthy by %s (%d errors in a row, last: %s): "
                        "left out for %.0f s", report.model_id, report.worker,
                        report.consecutive_errors, report.error, report.ttl_s)
        elif not report.healthy:
            log.info("model %s: an expired unhealthy report (from %s), ignored",
                     report.model_id, report.worker)
        else:
            log.warning("model %s reported healthy by %s", report.model_id, report.worker)


async def _ack_when_delivered(stream, events, sends) -> None:
    """Unacknowledged on a failed delivery or a stop: the batch is consumed again (duplicates)."""
    await asyncio.gather(*sends)
    for event in events:
        await stream.ack(event)


def _shadow_delivered(fut) -> None:
    if fut.cancelled() or fut.exception() is not None:
        metrics.SHADOW_FAILURES.inc()
        log.error("a shadow decision was not delivered: %r", None if fut.cancelled()
                  else fut.exception())
