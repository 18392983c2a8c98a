"""The feedback loop as real processes, for ``make drift`` and ``make learn``: the router, the
replay workers and, with the loop on, the feedback service on a broker; a stream of prompts
through them, collected until every one is routed or dead-lettered and every routed one has its
response and label; and what the feedback service did (the versions it announced, its
recalibrations).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import orjson

from benchmarks.processes import Service, router_env
from benchmarks.traffic import Collected, collect, produce, restamp
from ipr_model.artifacts.manifest import read_manifest
from schemas.topics import ARTIFACT_FILES, CONTROL_KEY, ROUTED_PREFIX, model_topic
from streams.control.topic import control_history
from streams.kafka.admin import describe_partitions, run_sync
from streams.kafka.clients import aiokafka_config
from streams.kafka.settings import KafkaSettings

FIXED = ("prompts_in", "prompts_dlq", "decisions", "responses", "feedback", "control")
# The feedback service's line for each recalibration (streams/feedback/app.py).
RECALIBRATION = re.compile(r"recalibration of (\S+) on (\d+) labels: held-out Brier \S+ -> \S+, "
                           r"(published|kept the current version)")


def run_topics(settings: KafkaSettings, run: str) -> tuple[KafkaSettings, dict[str, str]]:
    """``settings`` with fixed topics of the run's own (``<name>.<run>``), and the environment
    that names them to the services: runs on one broker then share only the model topics, whose
    records carry their run in the key (a run's router never reads another run's versions)."""
    names = {f: f"{getattr(settings, f)}.{run}" for f in FIXED}
    env = {f"IPR_{f.upper()}": v for f, v in names.items()}
    env["IPR_ARTIFACTS_TOPIC"] = f"{ARTIFACT_FILES}.{run}"
    return settings.model_copy(update=names), env


def start_services(artifacts: Path, dataset: Path, env: dict[str, str], run: str, harness: str,
                   tolerance: float, feedback: dict[str, str] | None, log_dir: Path,
                   degrade: str | None = None) -> list[Service]:
    """The router (``tolerance``), the replay workers and, when ``feedback`` (its settings as
    ``IPR_FEEDBACK_*`` variables; ``min_labels`` among them) is given, the feedback service,
    writing its versions under :func:`versions_dir`. ``env`` names the broker and the topics."""
    renv = {**env, **router_env(env["IPR_KAFKA_BOOTSTRAP"], f"{harness}-router-{run}")}
    group_prefix = f"{harness}-worker-{run}"
    topics = [model_topic(m) for m in read_manifest(artifacts, verify=False).models]
    run_sync(start_at_end(env["IPR_KAFKA_BOOTSTRAP"], group_prefix, topics))
    services = [
        Service("router",
                ["router", "--artifacts", str(artifacts), "--tolerance", str(tolerance)],
                renv, log_dir),
        Service("worker", ([degrade] if degrade else []) + [
            "worker", "--backend", "replay", "--dataset", str(dataset)],
                {**renv, "IPR_WORKER_GROUP_PREFIX": group_prefix}, log_dir,
                module="benchmarks.degraded_worker" if degrade else "streams.cli"),
    ]
    if feedback is not None:
        services.append(Service("feedback", ["feedback", "--artifacts", str(artifacts)], {
            **renv, "IPR_FEEDBACK_APP_ID": f"{harness}-feedback-{run}",
            "IPR_FEEDBACK_VERSIONS_DIR": str(versions_dir(harness, run)),
            "IPR_FEEDBACK_DATA_DIR": str(log_dir / "faust-feedback"), **feedback}, log_dir))
    return services


async def start_at_end(bootstrap: str, group_prefix: str, topics: list[str]) -> None:
    """Commit, for this run's worker group of each model topic that exists, the topic's current
    end. The runs on one broker share the model topics: a run's workers must not answer the
    prompts of the runs before it (this run's feedback service knows no decision of theirs, and
    each such label holds the labels behind it for ``label_wait_s``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    # on a new broker the offsets topic is still being made: aiokafka logs each retry as an error
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)
    existing = await describe_partitions(bootstrap)
    for topic in (t for t in topics if t in existing):
        consumer = AIOKafkaConsumer(**aiokafka_config(bootstrap), enable_auto_commit=False,
                                    group_id=f"{group_prefix}.{topic[len(ROUTED_PREFIX):]}")
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in existing[topic]]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            if any(ends.values()):
                await consumer.commit(ends)
        finally:
            await consumer.stop()


def versions_dir(harness: str, run: str) -> Path:
    return Path("build") / f"{harness}-versions" / run


def all_back(c: Collected, sent: int) -> bool:
    """Whether every one of ``sent`` prompts is dead-lettered by the router or routed, and every
    routed one has its response and, unless that response is an error, its label (a worker sends
    a label with each answer that is not an error, on another topic than the response: the one
    may be read before the other)."""
    if len(c.routed) + len(c.dead) < sent:
        return False
    for key in c.routed:
        response = c.responses.get(key)
        if response is None or (response.error is None and key not in c.feedback):
            return False
    return True


def lost(c: Collected, events: list[tuple[bytes, bytes]]) -> int:
    """The prompts of ``events`` that neither came back answered nor were dead-lettered by the
    router (by prompt id: a prompt answered twice, say after a failover, counts once)."""
    back = c.responses.keys() | c.dead.keys()
    return sum(1 for key in {k.decode() for k, _ in events} if key not in back)


async def stream(bootstrap: str, outputs: list[str], tag: str, events: list[tuple[bytes, bytes]],
                 rate: float, settings: KafkaSettings, timeout: float = 300.0) -> Collected:
    """Send ``events`` at ``rate`` and collect what comes back (tagged ``tag``) until
    :func:`all_back`, or ``timeout``."""
    collector = asyncio.create_task(collect(bootstrap, outputs, tag,
                                            lambda c: all_back(c, len(events)), timeout,
                                            settings))
    await asyncio.sleep(0.5)
    await produce(bootstrap, settings.prompts_in, restamp(events), rate)
    return await collector


async def announced_versions(settings: KafkaSettings) -> list[str]:
    """Every version announced on the control topic, in order."""
    return [orjson.loads(m.value)["version"] for m in await control_history(settings)
            if m.key == CONTROL_KEY.encode()]


def recalibrations(log: Path) -> list[dict]:
    """The feedback service's recalibrations, from its log: model, labels, published."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    return [{"model": m, "labels": int(n), "published": r == "published"}
            for m, n, r in RECALIBRATION.findall(text)]
