"""The router agent: a thin loop around :func:`streams.routing.route_records`.

Micro-batches of ``prompts.in`` are scored off the event loop (one scorer call per batch), then
every routed prompt, decision and dead letter is sent. A batch is acknowledged only once all of its
outputs are on Kafka, so offsets are committed only for records whose outputs were delivered
(at-least-once). Deliveries are awaited in the background while the next batch is scored: the
encoder never waits for the broker's round trip, and at most one batch is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from aiohttp.web import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas import encode
from streams import metrics
from streams.app import app, decisions, dlq, model_topic, prompts_in, settings
from streams.health import HEALTH_KEY_PREFIX, HealthBoard
from streams.routing import Record, route_records
from streams.scorer_service import scorers

log = logging.getLogger(__name__)
health = HealthBoard()  # updated by follow_control, read between batches
# A path only: the model loads when the worker starts.
scorers.configure(settings.artifacts, settings.encoder_threads)


@app.agent(prompts_in)
async def route_prompts(stream):
    loop = asyncio.get_running_loop()
    within = settings.batch_timeout_ms / 1000.0
    in_flight: asyncio.Task | None = None
    async for events in stream.noack_take(settings.batch_size, within=within):
        records = [
            Record(e.message.topic, e.message.partition, e.message.offset, e.key, e.value)
            for e in events
        ]
        scorer = scorers.current()  # a hot swap takes effect between batches, never inside one
        result = await loop.run_in_executor(
            None, route_records, records, scorer, settings.default_tolerance,
            settings.variant, settings.delta, health.unhealthy(time.time()),
        )
        sends = []
        for r in result.routed:
            sends.append(await model_topic(r.topic).send(key=r.key, value=encode(r.prompt), force=True))
            sends.append(await decisions.send(key=r.key, value=encode(r.decision), force=True))
        for d in result.dead:
            key = d.key.encode() if d.key is not None else None
            sends.append(await dlq.send(key=key, value=encode(d), force=True))
        if in_flight is not None:
            await in_flight  # raises if the previous batch failed to deliver: never acked
        in_flight = asyncio.ensure_future(_ack_when_delivered(stream, events, sends))
        _observe(result, len(records))


async def _ack_when_delivered(stream, events, sends) -> None:
    """Unacknowledged on a failed delivery or a stop: the batch is consumed again (duplicates)."""
    await asyncio.gather(*sends)
    for event in events:
        await stream.ack(event)


def _observe(result, n: int) -> None:
    now = time.time()
    metrics.BATCH_SIZE.observe(n)
    metrics.SCORING_SECONDS.observe(result.scoring_ms / 1000.0)
    for r in result.routed:
        metrics.ROUTED.labels(r.prompt.model_id).inc()
        for m in r.prompt.unhealthy_models or ():
            metrics.UNHEALTHY_LEFT_OUT.labels(m).inc()
        metrics.ROUTING_SECONDS.observe(r.prompt.routing_latency_ms / 1000.0)
        if r.prompt.sent_at:
            metrics.E2E_SECONDS.observe(max(0.0, now - r.prompt.sent_at))
    for d in result.dead:
        metrics.DEAD_LETTERS.labels(d.error_kind).inc()


@app.task
async def load_scorer() -> None:
    """Load the artifacts when the worker starts, off the event loop, before the first batch."""
    scorer = await asyncio.get_running_loop().run_in_executor(None, scorers.current)
    log.warning("router ready: artifacts %s, %d models", scorer.version, len(scorer.model_ids))


@app.task
async def follow_control() -> None:
    """Every router process reads all of ``router.control`` (no consumer group: each must see
    every update). On start it applies the latest announced version; afterwards each new one.
    Loading runs off the event loop; the swap takes effect at the next batch. Model health
    reports (key ``health:<model>``) update the health board, read at the next batch."""
    from aiokafka import AIOKafkaConsumer

    from schemas import ModelHealth, ModelUpdate, SchemaError, decode

    loop = asyncio.get_running_loop()
    consumer = AIOKafkaConsumer(
        settings.control, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async for msg in consumer:
            is_health = (msg.key or b"").startswith(HEALTH_KEY_PREFIX.encode())
            try:
                update = decode(ModelHealth if is_health else ModelUpdate, msg.value)
            except SchemaError as e:
                log.error("ignored a malformed control message at offset %d: %s", msg.offset, e)
                continue
            if isinstance(update, ModelHealth):
                _apply_health(update)
                continue
            current = scorers.current_version()
            if update.version == current:
                continue
            await loop.run_in_executor(None, scorers.swap, Path(update.location), update.sha256)
    finally:
        await consumer.stop()


def _apply_health(report) -> None:
    if not health.apply(report, time.time()):
        return
    state = "healthy" if report.healthy else "unhealthy"
    metrics.HEALTH_REPORTS.labels(report.model_id, state).inc()
    if report.model_id in health.unhealthy(time.time()):
        log.warning("model %s reported unhealthy by %s (%d errors in a row, last: %s): left out "
                    "for %.0f s", report.model_id, report.worker, report.consecutive_errors,
                    report.error, report.ttl_s)
    elif not report.healthy:
        log.info("model %s: an expired unhealthy report (from %s), ignored",
                 report.model_id, report.worker)
    else:
        log.warning("model %s reported healthy by %s", report.model_id, report.worker)


@app.page("/metrics")
async def prometheus_metrics(web, request):
    return Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
