"""How long a router takes to route, started fresh and started again after a SIGTERM or a
SIGKILL while prompts flow (``python -m benchmarks startup``; ``build/startup.json``).

Prompts go to ``prompts.in`` at a steady rate the whole time. Ready = from the moment the
process is spawned to the first prompt it puts on a model topic (the broker's append time;
the killed router can put nothing there any more). A restart waits for the group to drop the
killed member (``IPR_KAFKA_SESSION_TIMEOUT_S``), then routes the backlog; a stopped one
leaves the group as it goes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from pathlib import Path

from benchmarks.processes import Service, router_env
from benchmarks.traffic import collect, produce
from ipr_model.artifacts.manifest import read_manifest
from ipr_model.training.datasets import load_dataset
from schemas import PromptRequest, encode
from schemas.topics import model_topic
from streams.kafka.admin import create_topics
from streams.kafka.local import kafka_bootstrap
from streams.kafka.settings import KafkaSettings

HOW = ("sigterm", "sigkill")  # how the running router is stopped before the next one starts


def first_after(arrival: dict[str, float], t: float) -> float | None:
    """The earliest arrival at or after ``t``."""
    return min((a for a in arrival.values() if a >= t), default=None)


def measure(artifacts: Path, dataset: Path, rate: float = 10.0, restarts: int = 2,
            settle_s: float = 10.0) -> dict:
    models = read_manifest(artifacts).models
    texts = load_dataset(dataset).split("test").prompts
    run = uuid.uuid4().hex[:8]
    settings = KafkaSettings()
    log_dir = Path("build") / "logs" / f"startup-{run}"
    with kafka_bootstrap() as bootstrap:
        kafka = settings.model_copy(update={"kafka_bootstrap": bootstrap})
        topics = sorted({model_topic(m) for m in models})
        asyncio.run(create_topics(kafka, [settings.prompts_in, settings.prompts_dlq,
                                          settings.decisions, *topics],
                                  partitions=settings.topic_partitions,
                                  configs={"message.timestamp.type": "LogAppendTime"}))
        env = router_env(bootstrap, f"ipr-router-startup-{run}")
        events = ((f"{run}:{i}".encode(), encode(PromptRequest(
            prompt_id=f"{run}:{i}", text=texts[i % len(texts)]))) for i in itertools.count())
        services: list[Service] = []

        def spawn() -> float:
            services.append(Service(f"router-{len(services)}", ["router", "--artifacts",
                                    str(artifacts)], env, log_dir))
            return time.time()

        async def main() -> dict:
            stop = asyncio.Event()
            budget = int(rate * (restarts + 1) * (settle_s + 120))
            sending = asyncio.create_task(produce(
                kafka, settings.prompts_in, itertools.islice(_until(events, stop), budget),
                rate))
            live: dict = {}

            def done(got) -> bool:  # the collector's progress, read while it runs
                live["got"] = got
                return stop.is_set()

            seen = asyncio.create_task(collect(kafka, topics, run, done, 10_000, settings))
            spawned = [spawn()]
            await _wait_routed(live, spawned[-1])
            for how in HOW * restarts:
                await asyncio.sleep(settle_s)
                await asyncio.to_thread(services[-1].kill if how == "sigkill" else
                                        services[-1].stop)
                spawned.append(spawn())
                await _wait_routed(live, spawned[-1])
            stop.set()
            await sending
            got = await seen
            ready = [first_after(got.arrival, t) - t for t in spawned]
            after = {how: [round(r, 2) for r in ready[1 + i::len(HOW)]]
                     for i, how in enumerate(HOW)}
            return {"rate_per_s": rate, "cold_ready_s": round(ready[0], 2),
                    "restart_ready_s": after,
                    "session_timeout_s": settings.kafka_session_timeout_s,
                    "routed": len(got.routed)}

        try:
            return asyncio.run(main())
        finally:
            for s in services:
                s.stop()


def _until(events, stop: asyncio.Event):
    for event in events:
        if stop.is_set():
            return
        yield event


async def _wait_routed(live: dict, since: float, timeout: float = 300.0) -> None:
    """Until the running collector saw a prompt arrive on a model topic after ``since``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "got" in live and first_after(live["got"].arrival, since) is not None:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no prompt routed within {timeout:.0f} s of the router's start")
