"""Artifact versions over Kafka: the compacted artifact-files topic (``router.artifacts``) that
carries each new version's changed files to routers that share no filesystem with the feedback
service (:mod:`ipr_model.artifacts.chunks` says what the records hold and how they are checked).

- The feedback service creates the topic, sends a version's records (awaiting every delivery)
  before it announces the version on ``router.control``, and tombstones the files only the
  versions it prunes used, so compaction keeps what the kept versions need and no more.
- A router (``IPR_ROUTER_VERSIONS_FROM``) loads an announced version where it was written when
  it can read it (``auto``, ``filesystem``), else (``auto``, ``kafka``) rebuilds it into its own
  ``IPR_ROUTER_VERSIONS_DIR`` from the versions it has and the topic, read from the start.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from ipr_model.artifacts.chunks import Record, assemble, materialise
from ipr_model.artifacts.manifest import MANIFEST, read_manifest
from ipr_model.errors import ArtifactError
from schemas import ModelUpdate
from schemas.topics import safe_name
from streams.kafka.admin import create_topics
from streams.kafka.clients import aiokafka_config, start_topic_reader
from streams.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)

# Compaction keeps the latest record of each key (a version's files stay while a kept version
# uses them); one partition: the topic is small and read whole.
TOPIC_CONFIG = {"cleanup.policy": "compact"}


async def ensure_topic(settings: KafkaSettings, topic: str) -> None:
    await create_topics(settings, [topic], partitions=1, configs=TOPIC_CONFIG)


async def send_records(settings: KafkaSettings, topic: str, records: list[Record]) -> None:
    """Send every record (a None value is a tombstone) and wait until all are on Kafka."""
    if not records:
        return
    producer = AIOKafkaProducer(**aiokafka_config(settings), acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, key=k, value=v) for k, v in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def read_records(settings: KafkaSettings, topic: str, wait_s: float = 10.0) -> list[Record]:
    """Every (key, value) of ``topic`` from its start to its current end, in offset order."""
    consumer = await start_topic_reader(settings, topic)
    try:
        deadline = time.monotonic() + wait_s
        while not consumer.assignment():  # no group: every partition, once metadata is known
            if time.monotonic() > deadline:
                raise ArtifactError(f"topic {topic} has no partitions after {wait_s:.0f} s "
                                    "(expected the feedback service to have created it)")
            await asyncio.sleep(0.1)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        out: list[tuple[int, int, Record]] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out.extend((m.partition, m.offset, (m.key, m.value)) for m in msgs)
        return [r for _, _, r in sorted(out, key=lambda x: x[:2])]
    finally:
        await consumer.stop()


def can_read(update: ModelUpdate) -> bool:
    """Whether the announced location holds the announced manifest (a shared filesystem)."""
    try:
        return read_manifest(update.location, verify=False).sha256 == update.sha256
    except (ArtifactError, OSError):
        return False


def local_versions(artifacts: Path, current: Path | None, versions_dir: Path) -> list[Path]:
    """The versions a router has: its --artifacts, the one it serves, the ones it received."""
    received = sorted(versions_dir.iterdir()) if versions_dir.is_dir() else []
    return [artifacts, *([current] if current else []),
            *(p for p in received if p.is_dir() and not p.name.startswith("."))]


async def receive(settings: KafkaSettings, topic: str, update: ModelUpdate, local: list[Path],
                  versions_dir: Path) -> Path:
    """The directory of the announced version under ``versions_dir``: one received before, or
    rebuilt now from ``local`` and the topic. ArtifactError when it cannot be (nothing is left
    behind)."""
    out = versions_dir / safe_name(update.version)
    if (out / MANIFEST).is_file() and read_manifest(out, verify=False).sha256 == update.sha256:
        return out
    blobs = assemble(await read_records(settings, topic))
    await asyncio.get_running_loop().run_in_executor(
        None, materialise, update.sha256, blobs, local, out)
    return out


def prune_received(versions_dir: Path, keep: int, serving: Path) -> None:
    """Keep the ``keep`` newest received versions and the one served; the rest are removed
    (their files are hard links or copies: no other version loses a byte)."""
    if not versions_dir.is_dir():
        return
    mine = sorted((p for p in versions_dir.iterdir() if p.is_dir()),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    for p in mine[keep:]:
        if p.resolve() != serving.resolve():
            shutil.rmtree(p, ignore_errors=True)
            log.info("removed received version %s", p)
