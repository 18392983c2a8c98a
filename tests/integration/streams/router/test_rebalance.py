"""Two consumer-group rebalances in a row while prompts flow (a second router joins, then leaves,
twice): every prompt is routed, and afterwards the group's committed offsets reach the end of
every partition of prompts.in (the pattern of faust-streaming issue #318, where offsets stopped
being committed after a rebalance)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from benchmarks.traffic import collect
from tests.integration.kafka_waits import committed_to_end, group_members, seen
from tests.integration.streams.router.test_router import (
    good_events,
    prepare,
    start_router,
)
from tests.waits import wait_for_log

RATE = 15.0


async def produce_until(bootstrap, topic, events, stop: asyncio.Event, sent: list[int]) -> int:
    """Send ``events`` at RATE until ``stop`` is set, counting them in ``sent[0]``; returns how
    many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in events:
            if stop.is_set():
                break
            await producer.send_and_wait(topic, value, key=key)
            sent[0] += 1
            await asyncio.sleep(1 / RATE)
    finally:
        await producer.stop()
    return sent[0]


def test_two_rebalances_while_prompts_flow_lose_nothing_and_commit_to_the_end(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path
):
    settings, model_topics = prepare(kafka_bootstrap, unique, small_artifacts)
    events = good_events(texts, unique, 5000)
    first = start_router("router", small_artifacts, kafka_bootstrap, unique, tmp_path)
    services, group, sent = [first], f"router-{unique}", [0]

    async def routes_on(more: int) -> None:
        """Until the prompts sent so far and ``more`` after them are routed: the group routes
        as it is now."""
        want = {k.decode() for k, _ in events[:sent[0] + more]}
        await seen(kafka_bootstrap, model_topics, unique, settings,
                   lambda c: want <= set(c.routed), f"{len(want)} prompts routed")

    async def scenario() -> tuple[int, object]:
        stop = asyncio.Event()
        sending = asyncio.create_task(produce_until(kafka_bootstrap, settings.prompts_in,
                                                    events, stop, sent))
        for cycle in range(2):  # a second router joins, routes a while, leaves
            second = start_router(f"second-{cycle}", small_artifacts, kafka_bootstrap, unique,
                                  tmp_path)
            services.append(second)
            await group_members(kafka_bootstrap, group, 2)  # it has partitions of its own
            await routes_on(30)
            await asyncio.to_thread(second.stop)
            await group_members(kafka_bootstrap, group, 1)  # they are back with the first
            await routes_on(30)
        stop.set()
        sent_all = await sending
        got = await collect(kafka_bootstrap, [settings.prompts_dlq, *model_topics], unique,
                            lambda c: len(c.routed) + len(c.dead) >= sent_all, 120, settings)
        return sent_all, got

    try:
        wait_for_log(first, "router: consuming", 180)
        sent_all, got = asyncio.run(scenario())
        asyncio.run(committed_to_end(kafka_bootstrap, group, settings.prompts_in))
        alive = first.alive()
    finally:
        for s in services:
            s.stop()
    assert alive, first.log_tail()
    assert sent_all > 100
    assert set(got.routed) == {k.decode() for k, _ in events[:sent_all]}  # 0 lost
    assert not got.dead
    print(f"two rebalances: {sent_all} routed, {got.routed_dupes} routed twice")
