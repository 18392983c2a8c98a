"""The broker restarts mid-stream (SIGTERM, then SIGKILL) under a running router, worker and
feedback service: none is restarted, every prompt is routed and answered, every label is kept,
and the stall is measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from benchmarks.traffic import collect, count_records, produce, wait_until_routing
from streams.kafka.local import LocalKafka, free_port
from streams.kafka.settings import KafkaSettings
from tests.integration.kafka_waits import seen
from tests.integration.streams.kafka import system

N = 300
RATE = 20.0


@pytest.fixture
def kafka(tmp_path) -> Iterator[LocalKafka]:
    """A broker of this test's own, on a fixed port and data folder: it can restart in place."""
    broker = LocalKafka(port=free_port(), data_dir=tmp_path / "kafka", heap="384m")
    with broker:
        yield broker


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_broker_restart_mid_stream_loses_nothing(
    kafka, how, unique, small_artifacts, data_dir, zeroeval, tmp_path, monkeypatch
):
    env = {"IPR_KAFKA_BOOTSTRAP": kafka.bootstrap, "IPR_ROUTER_APP_ID": f"router-{unique}",
           "IPR_ROUTER_WEB_ENABLED": "false", "IPR_ROUTER_DATA_DIR": str(tmp_path / "faust"),
           "IPR_WORKER_GROUP_PREFIX": f"worker-{unique}", "IPR_FEEDBACK_APP_ID": f"fb-{unique}",
           "IPR_FEEDBACK_DATA_DIR": str(tmp_path / "faust-fb"),
           "IPR_FEEDBACK_VERSIONS_DIR": str(tmp_path / "versions")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = KafkaSettings()
    models, model_topics = system.prepare(settings, small_artifacts)
    events = system.prompt_events(zeroeval, unique, N)
    services = system.start(small_artifacts, data_dir / "zeroeval", models, tmp_path)
    outputs = [settings.responses, settings.prompts_dlq, *model_topics]

    async def restart_mid_stream() -> float:
        await seen(settings, model_topics, unique, settings, lambda c: len(c.routed) >= N // 5,
                   "prompts routed before the restart")
        began = time.monotonic()
        await asyncio.to_thread(kafka.kill if how == "sigkill" else kafka.stop)
        await asyncio.to_thread(kafka.start)
        return time.monotonic() - began

    async def scenario():
        await wait_until_routing(settings, settings, unique, model_topics)
        sending = asyncio.create_task(produce(settings, settings.prompts_in, events, RATE))
        down = await restart_mid_stream()
        await sending
        got = await collect(settings, outputs, unique,
                            lambda c: len(c.responses) >= N and len(c.routed) >= N, 300, settings)
        labels = await count_records(settings, f"fb-{unique}-labels-changelog", N, 60)
        return got, down, labels

    try:
        system.wait_until_up(services, models)  # the fault comes mid-stream, not mid-start-up
        got, down_s, labels = asyncio.run(scenario())
        alive = [s.alive() for s in services]
    finally:
        for s in services:
            s.stop()
    assert alive == [True] * 3, "".join(s.log_tail() for s in services)
    assert labels >= N  # the feedback service joined every label (a repeat is not a loss)
    assert set(got.responses) == {k.decode() for k, _ in events}  # 0 lost
    assert not got.dead
    routed_at = sorted(r.routed_at for r in got.routed.values())
    stall = max(b - a for a, b in zip(routed_at, routed_at[1:], strict=False))
    print(f"{how}: broker down and back in {down_s:.1f} s; routing stalled {stall:.1f} s; "
          f"{got.routed_dupes} routed and {got.response_dupes} answered twice")
