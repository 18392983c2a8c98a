"""Two consumer-group rebalances in a row while prompts flow (a second router joins, then leaves,
twice): every prompt is routed, and afterwards the group's committed offsets reach the end of
every partition of prompts.in (the pattern of faust-streaming issue #318, where offsets stopped
being committed after a rebalance)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from benchmarks.traffic import collect
from tests.integration.streams.router.test_router import (
    good_events,
    prepare,
    start_router,
    uncommitted,
    wait_for_log,
)

RATE = 15.0


async def produce_until(bootstrap, topic, events, stop: asyncio.Event) -> int:
    """Send ``events`` at RATE until ``stop`` is set; returns how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    sent = 0
    try:
        for key, value in events:
            if stop.is_set():
                break
            await producer.send_and_wait(topic, value, key=key)
            sent += 1
            await asyncio.sleep(1 / RATE)
    finally:
        await producer.stop()
    return sent


def test_two_rebalances_while_prompts_flow_lose_nothing_and_commit_to_the_end(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path
):
    settings, model_topics = prepare(kafka_bootstrap, unique, small_artifacts)
    events = good_events(texts, unique, 5000)
    first = start_router("router", small_artifacts, kafka_bootstrap, unique, tmp_path)
    services = [first]

    async def scenario() -> tuple[int, object]:
        stop = asyncio.Event()
        sending = asyncio.create_task(produce_until(kafka_bootstrap, settings.prompts_in,
                                                    events, stop))
        for cycle in range(2):  # a second router joins, routes a while, leaves
            second = start_router(f"second-{cycle}", small_artifacts, kafka_bootstrap, unique,
                                  tmp_path)
            services.append(second)
            await asyncio.to_thread(wait_for_log, second, "router: consuming", 180)
            await asyncio.sleep(8)
            await asyncio.to_thread(second.stop)
            await asyncio.sleep(5)
        stop.set()
        sent = await sending
        got = await collect(kafka_bootstrap, [settings.prompts_dlq, *model_topics], unique,
                            lambda c: len(c.routed) + len(c.dead) >= sent, 120, settings)
        return sent, got

    try:
        wait_for_log(first, "router: consuming", 180)
        sent, got = asyncio.run(scenario())
        lag = asyncio.run(uncommitted(kafka_bootstrap, f"router-{unique}", settings.prompts_in,
                                      4, wait_s=30))
        alive = first.alive()
    finally:
        for s in services:
            s.stop()
    assert alive, first.log_tail()
    assert sent > 100
    assert set(got.routed) == {k.decode() for k, _ in events[:sent]}  # 0 lost
    assert not got.dead
    assert lag == 0, f"{lag} records of prompts.in past the group's committed offsets"
    print(f"two rebalances: {sent} routed, {got.routed_dupes} routed twice")
