"""The README's console lines against the local broker: `kafka-console-producer.sh` and
`kafka-console-consumer.sh` from the cached jars (the consumer's class lives in kafka-tools)."""

from __future__ import annotations

import asyncio
import subprocess

from streams.kafka.admin import create_topics
from streams.kafka.jars import TOOLS
from streams.kafka.local import java_and_jars


def test_the_console_producer_and_consumer_run_from_the_cached_jars(kafka_bootstrap, unique):
    _, libs = java_and_jars()
    bin_dir = libs.parent / "bin"
    topic = f"console-{unique}"
    asyncio.run(create_topics(kafka_bootstrap, [topic], partitions=1))
    record = '{"prompt_id": "p1", "text": "What is 17 * 23?", "tolerance": 0.1}'
    produced = subprocess.run(
        [str(bin_dir / "kafka-console-producer.sh"), "--bootstrap-server", kafka_bootstrap,
         "--topic", topic], input=record + "\n", capture_output=True, text=True, timeout=120)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run(
        [str(bin_dir / "kafka-console-consumer.sh"), "--bootstrap-server", kafka_bootstrap,
         "--topic", topic, "--from-beginning", "--max-messages", "1", "--timeout-ms", "60000"],
        capture_output=True, text=True, timeout=120)
    assert consumed.returncode == 0, consumed.stderr  # ClassNotFoundException before kafka-tools
    assert consumed.stdout.strip() == record
    assert "log4j:WARN" not in consumed.stderr + produced.stderr
    assert "Processed a total of 1 messages" in consumed.stderr
    assert set(TOOLS) == {p.name for p in bin_dir.iterdir()}
