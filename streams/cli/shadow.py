"""``ipr shadow start | stop | promote | report``: a candidate artifact version in shadow in every
router (``streams.router.shadow``), driven by messages on ``router.control`` (key ``shadow``).

    start DIR      announce the version at DIR for shadow scoring (a ModelUpdate on key shadow)
    stop           stop it (a tombstone on key shadow)
    promote        announce the shadow version live (key artifacts), then stop the shadow
    report         live against shadow on the same prompts (``streams.cli.shadow_report``)
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.console import UserError, command

shadow_app = typer.Typer(
    no_args_is_help=True,
    help="A candidate artifact version scoring in shadow in every router (router.shadow).")


def _settings():
    """The routers' settings (topics, Kafka), once the cluster answers (else one line)."""
    from streams.kafka.admin import check_connection
    from streams.router.settings import RouterSettings

    s = RouterSettings()
    check_connection(s)
    return s


async def _produce(settings, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    """Send ``records`` in order and wait until Kafka has every one (acks=all)."""
    from aiokafka import AIOKafkaProducer

    from streams.kafka.clients import aiokafka_config

    producer = AIOKafkaProducer(**aiokafka_config(settings), acks="all")
    await producer.start()
    try:
        for key, value in records:
            await (await producer.send(topic, key=key, value=value))
    finally:
        await producer.stop()


def _update(root: Path):
    """The ModelUpdate of the version at ``root``, verified whole first."""
    from ipr_model.artifacts.manifest import read_manifest
    from schemas import ModelUpdate

    m = read_manifest(root)
    return m, ModelUpdate(version=m.version, location=str(m.root.resolve()), sha256=m.sha256,
                          models=m.models)


@shadow_app.command("start")
@command
def start(
    artifacts: Annotated[Path, typer.Argument(help="the candidate version's directory")],
    parent: Annotated[Path | None, typer.Option(
        help="a version the routers have: the candidate's files that differ from it are sent "
             "to the artifact-files topic first, for routers on other hosts")] = None,
) -> None:
    """Score the version at ARTIFACTS in shadow in every router (replacing any other)."""
    from ipr_model.artifacts.chunks import version_records
    from ipr_model.artifacts.manifest import read_manifest
    from schemas import encode
    from schemas.topics import SHADOW_KEY
    from streams.control.versions import ensure_topic, send_records
    from streams.kafka.admin import create_topics

    s = _settings()
    manifest, update = _update(artifacts)

    async def run() -> None:
        await create_topics(s, [s.shadow], s.topic_partitions)
        if parent is not None:
            await ensure_topic(s, s.artifacts_topic)
            await send_records(s, s.artifacts_topic,
                               version_records(manifest, read_manifest(parent)))
        await _produce(s, s.control, [(SHADOW_KEY.encode(), encode(update))])

    asyncio.run(run())
    typer.echo(f"shadow: {update.version} announced on {s.control}; decisions on {s.shadow}")


@shadow_app.command("stop")
@command
def stop() -> None:
    """Stop the shadow version in every router."""
    from schemas.topics import SHADOW_KEY

    s = _settings()
    asyncio.run(_produce(s, s.control, [(SHADOW_KEY.encode(), None)]))
    typer.echo(f"shadow: stopped (a tombstone on {s.control})")


async def current_shadow(settings):
    """The ModelUpdate of the version in shadow now, None when none is."""
    from schemas import ModelUpdate, decode
    from schemas.topics import SHADOW_KEY
    from streams.control.topic import control_history

    latest = [m for m in await control_history(settings) if m.key == SHADOW_KEY.encode()]
    if not latest or latest[-1].value is None:
        return None
    return decode(ModelUpdate, latest[-1].value)


@shadow_app.command("promote")
@command
def promote(
    version: Annotated[str | None, typer.Option(
        help="promote only if this is the version in shadow")] = None,
) -> None:
    """Make the shadow version live in every router (a hot swap between batches), then stop \
the shadow."""
    from schemas import encode
    from schemas.topics import CONTROL_KEY, SHADOW_KEY

    s = _settings()
    update = asyncio.run(current_shadow(s))
    if update is None:
        raise UserError(f"no version is in shadow on {s.control}: expected `ipr shadow start` "
                        "first")
    if version is not None and version != update.version:
        raise UserError(f"the version in shadow is {update.version}, not {version}")
    asyncio.run(_produce(s, s.control, [(CONTROL_KEY.encode(), encode(update)),
                                        (SHADOW_KEY.encode(), None)]))
    typer.echo(f"shadow: {update.version} announced live on {s.control}; shadow stopped")


@shadow_app.command("report")
@command
def report(
    version: Annotated[str | None, typer.Option(
        help="the shadow version to report on (default: the one in shadow now, else the "
             "latest scored)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Live against shadow on the same prompts: agreement, models, estimated cost, quality \
on the prompts labelled for both (reads the decisions, shadow and feedback topics to their end)."""
    from streams.cli.shadow_report import render, shadow_report

    s = _settings()
    if version is None and (now := asyncio.run(current_shadow(s))) is not None:
        version = now.version
    decisions, shadow, feedback, skipped = asyncio.run(read_report_topics(s))
    r = shadow_report(decisions, shadow, feedback, version)
    r["skipped_records"] = skipped
    typer.echo(json.dumps(r, indent=1) if as_json else render(r))


async def read_report_topics(settings):
    """The decisions, shadow decisions and labels on their topics so far (a missing topic is
    empty), and how many records did not decode."""
    from schemas import QualityFeedback, RoutingDecision, SchemaError, decode
    from streams.control.topic import topic_history
    from streams.kafka.admin import describe_partitions

    existing = set(await describe_partitions(settings))
    out, skipped = [], 0
    for topic, event in ((settings.decisions, RoutingDecision), (settings.shadow, RoutingDecision),
                         (settings.feedback, QualityFeedback)):
        got = []
        for msg in await topic_history(settings, topic) if topic in existing else []:
            try:
                got.append(decode(event, msg.value))
            except SchemaError:
                skipped += 1
        out.append(got)
    return (*out, skipped)
