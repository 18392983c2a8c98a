"""`make demo`: the whole system on a real Kafka, on real data.

Starts (or uses) a broker, one router process and one replay worker process serving every model,
streams a dataset's test prompts into ``prompts.in``, waits for every response, and reports what
was routed where, the realised quality and cost against always-the-reference-model, dead letters
and routing latency. Everything it started is stopped at the end.

Every prompt id carries this run's id, so a run on an existing cluster counts only its own events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from ipr_model.datasets import Dataset, load_dataset
from schemas import DeadLetter, ModelResponse, PromptRequest, QualityFeedback, RoutedPrompt, encode
from streams.broker import create_topics, kafka_bootstrap
from streams.processes import Service, router_env
from streams.settings import KafkaSettings
from streams.topics import model_topic

log = logging.getLogger(__name__)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    a = np.asarray(values)
    return {f"p{p}": round(float(np.percentile(a, p)), 2) for p in (50, 90, 99)}


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
    bootstrap: str, topics: list[str], run: str, done, timeout: float, settings: KafkaSettings
) -> Collected:
    """Consume the output topics until ``done(collected)`` or the timeout."""
    from aiokafka import AIOKafkaConsumer

    out = Collected()
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    prefix = f"{run}:"
    deadline = time.monotonic() + timeout
    try:
        while not done(out) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=1000)
            now = time.time()
            for tp, msgs in batch.items():
                for msg in msgs:
                    key = (msg.key or b"").decode(errors="replace")
                    if not key.startswith(prefix):
                        continue
                    v = orjson.loads(msg.value)
                    if tp.topic == settings.responses:
                        if key in out.responses:
                            out.response_dupes += 1
                        out.responses[key] = ModelResponse.model_validate(v)
                    elif tp.topic == settings.prompts_dlq:
                        dead = DeadLetter.model_validate(v)
                        if dead.source_topic == settings.prompts_in:
                            out.dead[key] = dead
                        else:
                            out.other_dead += 1
                    elif tp.topic == settings.feedback:
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
    finally:
        await consumer.stop()
    return out


async def produce(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]], rate: float) -> float:
    """Send ``events`` at ``rate`` per second (0: as fast as possible); returns the start time.

    Each event is taken from ``events`` only when it is due, so a lazy ``restamp`` stamps it as
    it goes out (not a rate interval earlier)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
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
    for pid, text in zip(data.ids, data.prompts):
        req = PromptRequest(prompt_id=f"{run}:{pid}", text=text)
        out.append((req.prompt_id.encode(), encode(req)))
    return out


def summarize(data: Dataset, sent: int, got: Collected, seconds: float, version: str | None) -> dict:
    """The demo report: counts that reconcile, realised quality and cost against the reference."""
    ids = data.model_ids
    row = {f"{k}": i for i, k in enumerate(data.ids)}
    q_mean = data.quality.mean(axis=0)
    ref = int(np.argmax(q_mean))
    per_model = Counter(r.model_id for r in got.routed.values())
    chosen_q, chosen_c, ref_q, ref_c = [], [], [], []
    for key, resp in got.responses.items():
        i = row[key.split(":", 1)[1]]
        chosen_q.append(got.feedback[key].quality if key in got.feedback else data.quality[i, ids.index(resp.model_id)])
        chosen_c.append(resp.cost_usd)
        ref_q.append(data.quality[i, ref])
        ref_c.append(data.cost[i, ref])
    latency = [
        (got.arrival[k] - r.sent_at) * 1000.0 for k, r in got.routed.items() if r.sent_at
    ]
    cost, reference_cost = float(sum(chosen_c)), float(sum(ref_c))
    return {
        "dataset": data.name,
        "router_version": version,
        "prompts_sent": sent,
        "routed": len(got.routed),
        "dead_lettered": len(got.dead),
        "dead_letter_reasons": dict(Counter(d.error_kind for d in got.dead.values())),
        "responses": len(got.responses),
        "response_errors": sum(1 for r in got.responses.values() if r.error),
        "duplicates": got.routed_dupes + got.response_dupes,
        "per_model": dict(per_model.most_common()),
        "quality": float(np.mean(chosen_q)) if chosen_q else None,
        "reference_model": ids[ref],
        "reference_quality": float(np.mean(ref_q)) if ref_q else None,
        "cost_usd": cost,
        "reference_cost_usd": reference_cost,
        "cost_saving": 1.0 - cost / reference_cost if reference_cost > 0 else None,
        "routing_latency_ms": percentiles(latency),
        "router_reported_latency_ms": percentiles([r.routing_latency_ms for r in got.routed.values()]),
        "seconds": round(seconds, 1),
    }


def run_demo(
    artifacts: Path,
    dataset: Path,
    tolerance: float = 0.2,
    limit: int | None = None,
    rate: float = 10.0,
    report_path: Path = Path("build/demo-report.json"),
    timeout: float = 600.0,
) -> dict:
    from ipr_model.artifacts import read_manifest

    manifest = read_manifest(artifacts)
    data = load_dataset(dataset)
    test = data.split("test") if data.has_split("test") else data
    test = test.restrict(manifest.models)
    if limit:
        test = test.subset(list(range(min(limit, len(test)))))
    run = uuid.uuid4().hex[:8]
    settings = KafkaSettings()
    log_dir = Path("build") / "logs" / run
    with kafka_bootstrap() as bootstrap:
        model_topics = sorted({model_topic(m) for m in manifest.models})
        outputs = [settings.responses, settings.prompts_dlq, settings.feedback, *model_topics]
        asyncio.run(create_topics(
            bootstrap, [settings.prompts_in, settings.decisions, settings.control, *outputs],
            partitions=settings.topic_partitions,
        ))
        env = router_env(bootstrap, f"ipr-router-demo-{run}")
        services = [
            Service("router", ["router", "--artifacts", str(artifacts), "--tolerance", str(tolerance)], env, log_dir),
            Service("worker", ["worker", "--backend", "replay", "--dataset", str(dataset),
                               *sum((["--model", m] for m in manifest.models), [])],
                    {**env, "IPR_WORKER_GROUP_PREFIX": f"ipr-worker-demo-{run}"}, log_dir),
        ]
        try:
            events = prompt_events(test, run)
            t_start = time.time()
            print(f"streaming {len(events)} prompts at {rate:g}/s into {settings.prompts_in} "
                  f"(run {run}, broker {bootstrap})", flush=True)

            async def main() -> Collected:
                await wait_until_routing(bootstrap, settings, run, model_topics)

                def done(c: Collected) -> bool:
                    return len(c.routed) + len(c.dead) >= len(events) and len(c.responses) >= len(c.routed)

                collector = asyncio.create_task(collect(bootstrap, outputs, run, done, timeout, settings))
                await asyncio.sleep(1.0)
                await produce(bootstrap, settings.prompts_in, restamp(events), rate)
                return await collector

            got = asyncio.run(main())
            for s in services:
                if not s.alive():
                    raise RuntimeError(f"{s.name} exited early:\n{s.log_tail()}")
        finally:
            for s in services:
                s.stop()
    report = summarize(test, len(events), got, time.time() - t_start, manifest.version)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    return report


async def wait_until_routing(
    bootstrap: str, settings: KafkaSettings, run: str, model_topics: list[str], timeout: float = 180.0
) -> None:
    """Send warm-up prompts until one comes out routed: the router is up, assigned and loaded.
    Warm-up ids are not this run's (``{run}-warmup:``), so they are not counted."""
    warm = f"{run}-warmup"
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        req = PromptRequest(prompt_id=f"{warm}:{n}", text="warm-up: what is 2 + 2?")
        await produce(bootstrap, settings.prompts_in, [(req.prompt_id.encode(), encode(req))], 0)
        got = await collect(bootstrap, model_topics, warm, lambda c: len(c.routed) > 0, 10.0, settings)
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
