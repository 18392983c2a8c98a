"""The demo's and benchmarks' load generator: events go out at the offered rate, stamped as they
are sent (a stamp taken before the rate's wait would inflate every latency it measures)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from benchmarks.traffic import produce, restamp
from streams.kafka.admin import create_topics

pytestmark = pytest.mark.integration


async def _consume(bootstrap: str, topic: str, n: int):
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await c.start()
    out = []
    try:
        while len(out) < n:
            for msgs in (await asyncio.wait_for(c.getmany(timeout_ms=300), 30)).values():
                out.extend(msgs)
    finally:
        await c.stop()
    return out


def test_events_are_stamped_when_sent_at_the_offered_rate(kafka_bootstrap, unique):
    topic = f"load.{unique}"
    events = [
        (f"{i}".encode(), orjson.dumps({"prompt_id": f"{i}", "text": "x"})) for i in range(10)
    ]

    async def run():
        await create_topics(kafka_bootstrap, [topic], partitions=1)
        await produce(kafka_bootstrap, topic, restamp(events), rate=5.0)
        return await _consume(kafka_bootstrap, topic, len(events))

    msgs = sorted(asyncio.run(run()), key=lambda m: int(m.key))
    assert [m.key for m in msgs] == [k for k, _ in events]
    stamps = [orjson.loads(m.value)["sent_at"] for m in msgs]
    # the producer's record timestamp (ms) is taken at send(): the stamp precedes it only by the
    # call itself, never by the 200 ms the rate makes each event wait
    lags = [m.timestamp / 1000.0 - s for m, s in zip(msgs, stamps, strict=True)]
    assert max(lags) < 0.05 and min(lags) > -0.01, lags
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]  # consecutive pairs
    assert min(gaps) > 0.15 and max(gaps) < 0.3, gaps  # 5 per second
