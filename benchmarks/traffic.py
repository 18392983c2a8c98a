"""Traffic for the harnesses and the integration tests: produce prompt events at a rate, stamp
their send time, wait until a router routes, and collect everything that comes back.

Every prompt id carries a run id (``{run}:{id}``), so a run on a shared cluster counts only its
own events.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import orjson

from ipr_model.training.datasets import Dataset
from schemas import DeadLetter, ModelResponse, PromptRequest, QualityFeedback, RoutedPrompt, encode
from streams.kafka.clients import Kafka, aiokafka_config
from streams.kafka.settings import KafkaSettings


@dataclass
class Collected:
    """What came back, keyed by prompt id (only this run's ids)."""

    routed: dict[str, RoutedPrompt] = field(default_factory=dict)
    # When each routed prompt was on its topic: the broker's append time on a topic with
    # ``message.timestamp.type=LogAppendTime`` (counted in ``broker_stamped``), else when read.
    arrival: dict[str, float] = field(default_factory=dict)
    broker_stamped: int = 0
    routed_dupes: int = 0
    dead: dict[str, DeadLetter] = field(default_factory=dict)  # prompts the router refused
    other_dead: int = 0  # dead letters from other stages (e.g. labels the feedback service refused)
    responses: dict[str, ModelResponse] = field(default_factory=dict)
    response_dupes: int = 0
    feedback: dict[str, QualityFeedback] = field(default_factory=dict)


LOG_APPEND_TIME = 1  # a record's ``timestamp_type`` when the broker set its timestamp


async def collect(
    bootstrap: Kafka, topics: list[str], run: str, done, timeout: float, settings: KafkaSettings,
    isolation_level: str = "read_uncommitted",
) -> Collected:
    """Consume the output topics until ``done(collected)`` or the timeout."""
    from aiokafka import AIOKafkaConsumer

    out = Collected()
    consumer = AIOKafkaConsumer(
        *topics, **aiokafka_config(bootstrap), group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, isolation_level=isolation_level,
    )
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while not done(out) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=1000)
            now = time.time()
            for msgs in batch.values():
                for msg in msgs:
                    take(out, msg, run, settings, now)
    finally:
        await consumer.stop()
    return out


def take(out: Collected, msg, run: str, settings: KafkaSettings, now: float) -> None:
    """Count one record read from an output topic in ``out``, if it is ``run``'s."""
    key = (msg.key or b"").decode(errors="replace")
    if not key.startswith(f"{run}:"):
        return
    v = orjson.loads(msg.value)
    if msg.topic == settings.responses:
        if key in out.responses:
            out.response_dupes += 1
        out.responses[key] = ModelResponse.model_validate(v)
    elif msg.topic == settings.prompts_dlq:
        dead = DeadLetter.model_validate(v)
        if dead.source_topic == settings.prompts_in:
            out.dead[key] = dead
        else:
            out.other_dead += 1
    elif msg.topic == settings.feedback:
        out.feedback[key] = QualityFeedback.model_validate(v)
    else:
        if key in out.routed:
            out.routed_dupes += 1
        elif msg.timestamp_type == LOG_APPEND_TIME:
            out.arrival[key] = msg.timestamp / 1000.0
            out.broker_stamped += 1
        else:
            out.arrival[key] = now
        out.routed[key] = RoutedPrompt.model_validate(v)


async def produce(
    bootstrap: Kafka, topic: str, events: list[tuple[bytes, bytes]], rate: float
) -> float:
    """Send ``events`` at ``rate`` per second (0: as fast as possible); returns the start time.

    Each event is taken from ``events`` only when it is due, so a lazy ``restamp`` stamps it as
    it goes out (not a rate interval earlier)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**aiokafka_config(bootstrap), acks="all", linger_ms=2)
    await producer.start()
    t0 = time.monotonic()
    pending = iter(events)
    try:
        for i in itertools.count():
            if rate > 0:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            event = next(pending, None)
            if event is None:
                break
            await producer.send(topic, key=event[0], value=event[1])
        await producer.flush()
    finally:
        await producer.stop()
    return t0


def prompt_events(data: Dataset, run: str) -> list[tuple[bytes, bytes]]:
    """One PromptRequest per prompt (the router's default tau; ``restamp`` sets ``sent_at``)."""
    out = []
    for pid, text in zip(data.ids, data.prompts, strict=True):
        req = PromptRequest(prompt_id=f"{run}:{pid}", text=text)
        out.append((req.prompt_id.encode(), encode(req)))
    return out


async def wait_until_routing(
    bootstrap: Kafka,
    settings: KafkaSettings,
    run: str,
    model_topics: list[str],
    timeout: float = 180.0,
) -> None:
    """Send warm-up prompts until one comes out routed: the router is up, assigned and loaded.
    Warm-up ids are not this run's (``{run}-warmup:``), so they are not counted."""
    warm = f"{run}-warmup"
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        req = PromptRequest(prompt_id=f"{warm}:{n}", text="warm-up: what is 2 + 2?")
        await produce(bootstrap, settings.prompts_in, [(req.prompt_id.encode(), encode(req))], 0)
        got = await collect(
            bootstrap, model_topics, warm, lambda c: len(c.routed) > 0, 10.0, settings
        )
        if got.routed:
            return
        n += 1
    raise TimeoutError(f"the router did not route a warm-up prompt within {timeout:.0f}s")


def restamp(events: list[tuple[bytes, bytes]]):
    """Set ``sent_at`` to now as each event goes out (the producer calls this lazily)."""
    for key, value in events:
        v = orjson.loads(value)
        v["sent_at"] = time.time()
        yield key, orjson.dumps(v)


async def count_records(kafka: Kafka, topic: str, at_least: int, timeout: float) -> int:
    """How many records ``topic`` holds, read until ``at_least`` or the timeout."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, **aiokafka_config(kafka), group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    n, deadline = 0, time.monotonic() + timeout
    try:
        while n < at_least and time.monotonic() < deadline:
            n += sum(len(v) for v in (await consumer.getmany(timeout_ms=500)).values())
    finally:
        await consumer.stop()
    return n
