"""The feedback service: quality labels -> per-model recalibration -> new artifact versions.

- ``remember_decisions`` keeps each routing decision's chosen model and prompt embedding in the
  changelog-backed table ``decision_log`` (a restart recovers it from Kafka), for at most
  ``decision_retention_s``: entries older than that are swept as new decisions arrive.
- ``collect_labels`` joins each QualityFeedback to its decision. The two topics are read
  independently, so a label may be read before its decision: it then waits (up to
  ``label_wait_s`` after it was produced, holding its offset uncommitted) for the decision to be
  read. A label it cannot use (bad bytes,
  quality outside [0, 1], no decision for the prompt, a model the artifacts do not have, a model
  other than the one the prompt was routed to) goes to the dead-letter topic with the reason.
  Usable labels are kept per model in the table ``labels`` (at most ``max_labels`` per model).
- When a model has ``min_labels`` new labels, or has some and was last recalibrated
  ``recal_interval_s`` ago (checked as labels arrive), its local correction is refitted on them
  (:mod:`ipr_model.recalibrate`, off the event loop, with the held-out guardrail); a published
  version is announced on ``router.control`` and routers hot-swap to it.

One process runs this service (recalibration needs every label of a model): run a single
instance; its tables are partitioned like ``prompts.in`` (decisions and labels are keyed by
prompt id).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

import faust
import numpy as np

from ipr_model.artifacts import read_manifest
from schemas import DeadLetter, ModelUpdate, QualityFeedback, RoutingDecision, SchemaError, decode, encode
from streams.settings import FeedbackSettings
from streams.vectors import unpack

log = logging.getLogger(__name__)
settings = FeedbackSettings()

app = faust.App(
    settings.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    datadir=str(settings.data_dir),
    store="memory://",  # tables live in memory and are recovered from their changelog topics
    topic_partitions=settings.topic_partitions,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    key_serializer="json",  # the tables' changelogs: JSON, readable with any Kafka tool
    value_serializer="json",
)


def _raw_topic(name: str) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw")


decisions_topic = _raw_topic(settings.decisions)
feedback_topic = _raw_topic(settings.feedback)
dlq = _raw_topic(settings.prompts_dlq)
control = _raw_topic(settings.control)

decision_log = app.Table("decision-log", default=None, key_type=str, value_type=None)
labels = app.Table("labels", default=None, key_type=str, value_type=None)
pending = app.Table("pending", default=int, key_type=str, value_type=int)


def changelog_topics() -> list[str]:
    return [t.changelog_topic.get_topic_name() for t in (decision_log, labels, pending)]


@dataclass
class Current:
    root: object = settings.artifacts
    models: frozenset = frozenset()
    version: str = ""


current = Current()
last_recal: dict[str, float] = {}  # model -> monotonic time of its last recalibration


def judge(fb: QualityFeedback, decision: dict | None, models: frozenset) -> tuple[str, str] | None:
    """Why a label cannot be used (error kind, message), or None when it can."""
    if decision is None:
        return "unknown_prompt", f"no routing decision for prompt {fb.prompt_id!r} (or it expired)"
    if fb.model_id not in models:
        return "unknown_model", f"model {fb.model_id!r} is not in artifacts {current.version}"
    if fb.model_id != decision["model"]:
        return "wrong_model", (
            f"prompt {fb.prompt_id!r} was routed to {decision['model']!r}, not {fb.model_id!r}"
        )
    return None


@app.task
async def load_current() -> None:
    m = read_manifest(settings.artifacts)
    current.root, current.models, current.version = m.root, frozenset(m.models), m.version
    log.warning("feedback service on artifacts %s (%d models)", m.version, len(m.models))


@app.agent(decisions_topic)
async def remember_decisions(stream):
    seen = 0
    async for event in stream.events():
        try:
            d = decode(RoutingDecision, event.value)
        except SchemaError:
            continue  # the router wrote it; nothing a label could join anyway
        if d.embedding:
            decision_log[d.prompt_id] = {"model": d.model_id, "embedding": d.embedding, "at": d.routed_at}
        seen += 1
        if seen % 1000 == 0:
            cutoff = time.time() - settings.decision_retention_s
            for key in [k for k, v in decision_log.items() if v and v["at"] < cutoff]:
                del decision_log[key]


@app.agent(feedback_topic)
async def collect_labels(stream):
    async for event in stream.events():
        msg = event.message
        try:
            fb = decode(QualityFeedback, event.value)
            decision = await decision_for(
                fb.prompt_id, (msg.timestamp or time.time()) + settings.label_wait_s)
            problem = judge(fb, decision, current.models)
        except SchemaError as e:
            fb, problem = None, (e.kind, str(e))
        if problem:
            dead = DeadLetter.build(source_topic=msg.topic, partition=msg.partition, offset=msg.offset,
                                    key=event.key, value=event.value, error=problem[1], error_kind=problem[0])
            await dlq.send(key=event.key, value=encode(dead), force=True)
            continue
        d = decision_log[fb.prompt_id]
        labels[f"{fb.model_id}|{fb.prompt_id}"] = {"embedding": d["embedding"], "quality": fb.quality,
                                                   "at": time.time()}
        pending[fb.model_id] += 1
        if due(pending[fb.model_id], time.monotonic() - last_recal.setdefault(fb.model_id, time.monotonic())):
            pending[fb.model_id] = 0
            last_recal[fb.model_id] = time.monotonic()
            await recalibrate_model(fb.model_id)


async def decision_for(prompt_id: str, deadline: float) -> dict | None:
    """The decision of ``prompt_id``; while it is unknown, poll until ``deadline`` (epoch s)
    for ``remember_decisions`` to read it. The wait is bounded by wall-clock time, so labels of
    prompts that never had a decision delay the labels behind them by at most ``label_wait_s``."""
    while (decision := decision_log.get(prompt_id)) is None and time.time() < deadline:
        await asyncio.sleep(0.05)
    return decision


def due(new_labels: int, since_last_s: float) -> bool:
    """Recalibrate when enough new labels exist, or when some exist and the last recalibration
    (or the service's start) is ``recal_interval_s`` old."""
    return new_labels >= settings.min_labels or (
        new_labels > 0 and since_last_s >= settings.recal_interval_s
    )


async def recalibrate_model(model_id: str) -> None:
    from ipr_model.recalibrate import RecalConfig, recalibrate

    mine = sorted(((k, v) for k, v in labels.items() if v and k.startswith(f"{model_id}|")),
                  key=lambda kv: kv[1]["at"])
    for k, _ in mine[: max(0, len(mine) - settings.max_labels)]:
        del labels[k]
    mine = mine[-settings.max_labels:]
    x = np.stack([unpack(v["embedding"]) for _, v in mine])
    y = np.array([v["quality"] for _, v in mine])
    age = time.time() - np.array([v["at"] for _, v in mine])
    cfg = RecalConfig(half_life_s=settings.label_half_life_s)
    out = settings.versions_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    result = await asyncio.get_running_loop().run_in_executor(
        None, recalibrate, current.root, {model_id: (x, y, age)}, out, cfg
    )
    for m in result.models:
        log.warning("recalibration of %s on %d labels: held-out Brier %.4f -> %.4f, %s (%.1fs)",
                    m.model_id, m.labels, m.brier_uncorrected, m.brier_candidate,
                    "published" if m.published else "kept the current version",
                    time.perf_counter() - t0)
    if result.manifest is not None:
        mf = result.manifest
        current.root, current.version = mf.root, mf.version
        update = ModelUpdate(version=mf.version, location=str(mf.root.resolve()), sha256=mf.sha256,
                             models=mf.models)
        await control.send(key=b"artifacts", value=encode(update), force=True)
