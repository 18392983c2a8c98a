"""The feedback service: quality labels -> per-model recalibration -> new artifact versions.

- ``remember_decisions`` keeps each routing decision's chosen model and prompt embedding in the
  changelog-backed table ``decision-log`` (a restart recovers it from Kafka), for at most
  ``decision_retention_s``: entries older than that are swept as new decisions arrive.
- ``collect_labels`` joins each QualityFeedback to its decision. The two topics are read
  independently, so a label may be read before its decision: it then waits (its offset held
  uncommitted) for the decision to be read, and is given up only once ``label_wait_s`` has passed
  since it was produced (or since the service started, for a backlog) *and* the decisions have
  been processed up to where their partitions ended at that moment
  (:mod:`streams.feedback.waiting`): a broker outage or a slow decisions consumer delays a
  label, it does not dead-letter it (at most ``CATCH_UP_WAIT_S`` more). A label it cannot use
  (:func:`streams.feedback.labels.judge`, or bad bytes) goes to the dead-letter topic with the
  reason. Usable labels are kept per model in the table ``labels`` (at most ``max_labels`` per
  model).
- When a model is due (:func:`streams.feedback.labels.due`), its local correction is refitted on
  its labels (:mod:`ipr_model.training.refit`, off the event loop, with the held-out guardrail); a
  published version's changed files go to the compacted artifact-files topic (for routers on
  other hosts: :mod:`streams.control.versions`), then it is announced on ``router.control`` and
  routers hot-swap to it. A
  recalibration that fails is logged and counted (``ipr_feedback_recalibrations_total{result}``);
  the labels are kept and the service goes on.

One process runs this service (recalibration needs every label of a model): run a single
instance; its tables are partitioned like ``prompts.in`` (decisions and labels are keyed by
prompt id).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import shutil
import time
import uuid
from pathlib import Path

import faust
import numpy as np
from faust.types import TP
from prometheus_client import Counter

from ipr_model.artifacts.chunks import retired_keys, version_records
from ipr_model.artifacts.manifest import Manifest, read_manifest
from ipr_model.errors import ArtifactError
from schemas import (
    DeadLetter,
    ModelUpdate,
    QualityFeedback,
    RoutingDecision,
    SchemaError,
    decode,
    encode,
)
from schemas.codec import ERROR_KINDS
from schemas.topics import CONTROL_KEY
from schemas.vectors import unpack
from streams import tracing
from streams.control.topic import read_control
from streams.control.versions import ensure_topic, send_records
from streams.feedback.labels import due, judge, versions_to_remove
from streams.feedback.settings import FeedbackSettings
from streams.feedback.waiting import caught_up, wait_for_decision
from streams.kafka.admin import KafkaAdminError, committed_offsets
from streams.kafka.clients import faust_config
from streams.kafka.lag import watch_lag

log = logging.getLogger(__name__)

RECALIBRATIONS = Counter("ipr_feedback_recalibrations_total",
                         "recalibrations run, by result (published, kept, failed)", ["result"])
DEAD_LETTERS = Counter("ipr_feedback_dead_letters_total", "labels dead-lettered, by reason",
                       ["reason"])
# at zero from the start: a rate over a series' first increment would not show it
for _result in ("published", "kept", "failed"):
    RECALIBRATIONS.labels(_result)
for _kind in (*ERROR_KINDS, "unknown_model", "wrong_model", "unknown_prompt"):
    DEAD_LETTERS.labels(_kind)


class Feedback:
    """The feedback service's topics, tables and current artifact version, for one Faust app."""

    def __init__(self, app: faust.App, settings: FeedbackSettings) -> None:
        self.app, self.settings = app, settings
        self.decisions = self._raw_topic(settings.decisions)
        self.feedback = self._raw_topic(settings.feedback)
        self.dlq = self._raw_topic(settings.prompts_dlq)
        self.control = self._raw_topic(settings.control)
        # Changelog records go to the partition of their key, not of the event being processed:
        # a key written while reading several partitions (a model's last recalibration, a label
        # or decision deleted while another partition's event is handled) must have one home, or
        # a restart recovers whichever of its partitions is read last.
        table = functools.partial(app.Table, key_type=str, use_partitioner=True)
        self.decision_log = table("decision-log", default=None, value_type=None)
        self.labels = table("labels", default=None, value_type=None)
        # A model's new labels are those kept after its last recalibration (by their "at"):
        # counted from the labels table itself, so a crash between two tables' changelog writes
        # cannot lose a count (a count table of its own lost the last label's now and then).
        self.recalibrated = table("recalibrated", default=float, value_type=float)
        self._new_labels: collections.Counter[str] | None = None  # once the tables are back
        self.root: Path = settings.artifacts
        self.models: frozenset[str] = frozenset()
        self.version = ""
        self.last_recal: dict[str, float] = {}  # model -> monotonic time of its last one
        self.last_publish = float("-inf")  # monotonic time of the last published version
        self.started = time.time()  # when labels began to be read (after table recovery)
        self.decisions_read: dict[int, int] = {}  # partition -> next offset after those processed
        self.decisions_start: dict[int, int] = {}  # partition -> where reading it began

    def _raw_topic(self, name: str) -> faust.TopicT:
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw")

    def changelog_topics(self) -> list[str]:
        return [t.changelog_topic.get_topic_name()
                for t in (self.decision_log, self.labels, self.recalibrated)]

    async def load_current(self) -> None:
        """Start from ``--artifacts``, then from the latest version announced on the control
        topic (a restart must not drop the corrections published since), when it is readable.
        Run before the Faust app starts (``ipr feedback``), so no label is judged before."""
        try:
            await ensure_topic(self.settings, self.settings.artifacts_topic)
        except KafkaAdminError as e:  # publishing will fail, each time with its reason
            log.error("could not create the artifact-files topic %s: %s",
                      self.settings.artifacts_topic, e)
        m = read_manifest(self.settings.artifacts)
        self.root, self.models, self.version = m.root, frozenset(m.models), m.version
        latest = await self.latest_announced()
        if latest is not None and latest.version != m.version:
            try:
                m = read_manifest(latest.location)
                self.root, self.models, self.version = m.root, frozenset(m.models), m.version
            except ArtifactError as e:
                log.error("the latest announced version %s cannot be read (%s); starting from "
                          "%s", latest.version, e, self.version)

    async def log_start(self) -> None:
        s = self.settings
        log.warning("feedback: consuming %s and %s from %s as group %s; artifacts %s "
                    "(%d models)", s.decisions, s.feedback, s.kafka_bootstrap, s.app_id,
                    self.version, len(self.models))

    async def latest_announced(self) -> ModelUpdate | None:
        async for msg in read_control(self.settings, follow=False):
            if msg.key == CONTROL_KEY.encode():
                with contextlib.suppress(SchemaError):
                    return decode(ModelUpdate, msg.value)
        return None

    async def remember_decisions(self, stream) -> None:
        seen = 0
        async for event in stream.events():
            try:
                d = decode(RoutingDecision, event.value)
            except SchemaError:
                d = None  # the router wrote it; nothing a label could join anyway
            if d is not None and d.embedding:
                self.decision_log[d.prompt_id] = {"model": d.model_id, "embedding": d.embedding,
                                                  "at": d.routed_at}
            # after the decision is stored, with no await between: read up to here means stored
            self.decisions_read[event.message.partition] = event.message.offset + 1
            seen += 1
            if seen % 1000 == 0:
                cutoff = time.time() - self.settings.decision_retention_s
                for key in [k for k, v in self.decision_log.items() if v and v["at"] < cutoff]:
                    del self.decision_log[key]

    async def collect_labels(self, stream) -> None:
        self.started = time.time()  # a backlog's labels wait for their decisions from now
        async for event in stream.events():
            msg = event.message
            span = tracing.consumed(msg.topic, msg.partition, msg.offset, self.app.conf.id,
                                    event.key, msg.headers)
            try:
                with tracing.active(span):  # a recalibration it sets off is its child
                    await self._label(event, span)
            finally:
                if span is not None:
                    span.end()

    async def _label(self, event, span) -> None:
        """One label: kept (and a recalibration when one is due), or dead-lettered."""
        s, msg = self.settings, event.message
        try:
            fb = decode(QualityFeedback, event.value)
            produced = msg.timestamp or time.time()  # seconds (Faust)
            decision = await self.decision_for(
                fb.prompt_id, max(produced, self.started) + s.label_wait_s)
            problem = judge(fb, decision, self.models, self.version)
        except SchemaError as e:
            fb, problem = None, (e.kind, str(e))
        if problem:
            dead = DeadLetter.build(
                source_topic=msg.topic, partition=msg.partition, offset=msg.offset,
                key=event.key, value=event.value, error=problem[1], error_kind=problem[0])
            await self.dlq.send(key=event.key, value=encode(dead), force=True)
            DEAD_LETTERS.labels(problem[0]).inc()
            log.warning("dead letter %s: key %s at %s[%d]@%d", problem[0], dead.key,
                        msg.topic, msg.partition, msg.offset)
            tracing.failed(span, problem[0])
            return
        if span is not None:
            span.set_attribute("ipr.model", fb.model_id)
        await self._keep(fb)

    async def _keep(self, fb: QualityFeedback) -> None:
        s = self.settings
        d = self.decision_log[fb.prompt_id]
        key = f"{fb.model_id}|{fb.prompt_id}"
        # A label read again (its offset was not committed before a crash) is not a new one.
        new = self.labels.get(key) is None
        counts = self.new_labels()  # before this label is in the table
        at = time.time()
        self.labels[key] = {"embedding": d["embedding"], "quality": fb.quality, "at": at}
        if not new:
            return
        counts[fb.model_id] += 1
        now = time.monotonic()
        since = now - self.last_recal.setdefault(fb.model_id, now)
        if due(counts[fb.model_id], since, s.min_labels, s.recal_interval_s,
               now - self.last_publish, s.min_publish_interval_s):
            counts[fb.model_id] = 0
            self.recalibrated[fb.model_id] = at
            self.last_recal[fb.model_id] = now
            try:
                with tracing.span(f"recalibrate {fb.model_id}", {"ipr.model": fb.model_id}):
                    await self.recalibrate_model(fb.model_id)
            except Exception as e:  # noqa: BLE001 - the labels stay; the next one is due later
                RECALIBRATIONS.labels("failed").inc()
                log.error("recalibration of %s failed (%s: %s); its labels are kept",
                          fb.model_id, type(e).__name__, e)

    def new_labels(self) -> collections.Counter[str]:
        """Labels kept per model since its last recalibration; counted from the tables on first
        use (a label is read after the tables are recovered), then kept up to date."""
        if self._new_labels is None:
            self._new_labels = collections.Counter(
                model for key, label in self.labels.items() if label is not None
                and label["at"] > self.recalibrated[(model := key.split("|", 1)[0])])
        return self._new_labels

    async def decision_for(self, prompt_id: str, deadline: float) -> dict | None:
        """The decision of ``prompt_id``, waited for until ``deadline`` (epoch s) has passed and
        the decisions have been processed up to where their partitions ended then
        (:func:`streams.feedback.waiting.wait_for_decision`). Labels of prompts that never had a
        decision so delay the labels behind them by about ``label_wait_s`` while the decisions
        are read in time."""
        return await wait_for_decision(lambda: self.decision_log.get(prompt_id), deadline,
                                       self.decision_ends, self.decisions_caught_up)

    async def decision_ends(self) -> dict[int, int] | None:
        """Where each assigned partition of the decisions topic ends now, asked of the broker
        (Faust's ``highwaters`` is a ListOffsets request, out of a transaction); None: unknown,
        or no partition assigned yet."""
        consumer = self.app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic == self.settings.decisions]
        if not tps:
            return None
        try:
            ends = await asyncio.wait_for(consumer.highwaters(*tps), 5)
        except Exception as e:  # noqa: BLE001 - the broker may be away; asked again later
            log.info("the decisions' end offsets are unknown for now (%s)", type(e).__name__)
            await asyncio.sleep(1)
            return None
        return {tp.partition: int(end) for tp, end in ends.items()}

    async def decisions_caught_up(self, ends: dict[int, int]) -> bool:
        """Whether every decisions partition has been processed up to ``ends``
        (:func:`streams.feedback.waiting.caught_up`). A partition with no decision processed
        since the start counts from where its reading began, asked of the broker once."""
        unknown = [p for p in ends if p not in self.decisions_read and p not in
                   self.decisions_start]
        if unknown:
            try:
                self.decisions_start.update(await asyncio.wait_for(self.start_offsets(unknown), 5))
            except Exception as e:  # noqa: BLE001 - the broker may be away; asked again later
                log.info("where the decisions' partitions began is unknown for now (%s)",
                         type(e).__name__)
                await asyncio.sleep(1)
                return False
        return caught_up(ends, self.decisions_read, self.decisions_start)

    async def start_offsets(self, partitions: list[int]) -> dict[int, int]:
        """Where the service began reading these decisions partitions: the group's committed
        offset, or the log's start when none is committed (or it has been deleted since). Not
        the consumer's position, which is past whatever Faust fetched and has yet to process."""
        s = self.settings
        tps = [TP(s.decisions, p) for p in partitions]
        committed = await committed_offsets(s, s.app_id, tps)
        earliest = await self.app.consumer.earliest_offsets(*tps)
        return {tp.partition: max(committed.get(tp, -1), int(earliest[tp])) for tp in tps}

    def model_labels(self, model_id: str) -> list[dict]:
        """The model's most recent ``max_labels`` labels, oldest first; older ones are deleted."""
        mine = sorted(((k, v) for k, v in self.labels.items()
                       if v and k.startswith(f"{model_id}|")), key=lambda kv: kv[1]["at"])
        for k, _ in mine[: max(0, len(mine) - self.settings.max_labels)]:
            del self.labels[k]
        return [v for _, v in mine[-self.settings.max_labels:]]

    async def recalibrate_model(self, model_id: str) -> None:
        from ipr_model.training.refit import RecalConfig, recalibrate

        s = self.settings
        mine = self.model_labels(model_id)
        x = np.stack([unpack(v["embedding"]) for v in mine])
        y = np.array([v["quality"] for v in mine])
        age = time.time() - np.array([v["at"] for v in mine])
        out = s.versions_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        result = await asyncio.get_running_loop().run_in_executor(
            None, recalibrate, self.root, {model_id: (x, y, age)}, out,
            RecalConfig(half_life_s=s.label_half_life_s, graduate_labels=s.graduate_labels),
        )
        for m in result.models:
            log.warning("recalibration of %s on %d labels: held-out Brier %.4f -> %.4f, %s "
                        "(%.1fs)", m.model_id, m.labels, m.brier_uncorrected, m.brier_candidate,
                        "published" if m.published else "kept the current version",
                        time.perf_counter() - t0)
        RECALIBRATIONS.labels("published" if result.manifest is not None else "kept").inc()
        if result.manifest is not None:
            await self.publish(result.manifest)

    async def publish(self, mf: Manifest) -> None:
        """Serve ``mf``: its changed files onto the artifact-files topic (every one delivered
        first), then its announcement; then prune the old versions and tombstone their files."""
        s = self.settings
        await send_records(s, s.artifacts_topic, version_records(
            mf, read_manifest(self.root, verify=False)))
        self.root, self.version = mf.root, mf.version
        update = ModelUpdate(version=mf.version, location=str(mf.root.resolve()),
                             sha256=mf.sha256, models=mf.models)
        await self.control.send(key=CONTROL_KEY.encode(), value=encode(update), force=True)
        self.last_publish = time.monotonic()
        retired = self.prune_versions(protected={mf.version, mf.data.get("parent_version") or ""})
        await send_records(s, s.artifacts_topic, [(k, None) for k in retired])

    def prune_versions(self, protected: set[str]) -> list[bytes]:
        """Remove the versions beyond ``keep_versions`` that this service wrote (its
        ``versions_dir``), never the served one nor its parent, whose files it may share
        (``protected``: versions or paths). Returns the artifact-files keys that only the
        removed versions used, to tombstone."""
        d = self.settings.versions_dir
        mine = {str(p): read_manifest(p, verify=False) for p in d.iterdir()
                if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()}
        by_version = {m.version: p for p, m in mine.items()}
        protected = {by_version.get(v, v) for v in protected}
        stamps = [(Path(p).stat().st_mtime, p) for p in mine]
        gone = versions_to_remove(stamps, self.settings.keep_versions, protected)
        retired = retired_keys([mine[p] for p in gone],
                               [m for p, m in mine.items() if p not in gone])
        for path in gone:
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed old version %s", path)
        return retired


def create_app(settings: FeedbackSettings) -> tuple[faust.App, Feedback]:
    """The service's Faust app, and the :class:`Feedback` whose agents it runs."""
    app = faust.App(
        settings.app_id,
        **faust_config(settings),
        datadir=str(settings.data_dir),
        store="memory://",  # tables live in memory and are recovered from their changelog topics
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        key_serializer="json",  # the tables' changelogs: JSON, readable with any Kafka tool
        value_serializer="json",
    )
    service = Feedback(app, settings)
    app.task(service.log_start)  # load_current runs before the app starts
    app.agent(service.decisions, name="remember_decisions")(service.remember_decisions)
    app.agent(service.feedback, name="collect_labels")(service.collect_labels)
    if settings.metrics_port is not None:
        groups = {settings.app_id: [settings.decisions, settings.feedback]}

        @app.task
        async def measure_lag() -> None:
            await watch_lag(settings, lambda: groups)
    return app, service
