"""The `ipr` command's service commands refuse a user's mistake in one line, before connecting."""

from __future__ import annotations

import subprocess
import sys


def ipr(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_a_worker_for_a_model_its_artifacts_do_not_have_is_refused(small_artifacts):
    p = ipr("worker", "--backend", "openai", "--model", "gpt-4o-2024-08-6",
            "--artifacts", str(small_artifacts))
    assert p.returncode == 2
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("error: model(s) gpt-4o-2024-08-6 not in artifacts ")
    assert "gpt-4o-2024-08-06" in line  # what it has


def test_a_router_without_artifacts_is_refused(tmp_path):
    p = ipr("router", "--artifacts", str(tmp_path / "none"))
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {tmp_path / 'none'}: not a directory (expected an " \
                               "artifact directory)"


def test_a_bad_policy_is_refused_in_one_line_naming_the_field():
    env = {**__import__("os").environ, "IPR_KAFKA_BOOTSTRAP": "127.0.0.1:1"}  # never reached
    for args, field in [(["--budget", "1"], "budget_usd and period go together"),
                        (["--budget", "-1", "--period", "day"], "budget_usd"),
                        (["--tolerance", "1.5"], "tolerance"),
                        (["--budget", "1", "--period", "week"], "period"),
                        (["--on-exhausted", "pray"], "on_exhausted")]:
        p = ipr("policy", "set", "acme", *args, env=env)
        assert p.returncode == 2, p.stderr
        [line] = p.stderr.strip().splitlines()
        assert line.startswith("error: ") and field in line


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_policy_commands_without_a_broker_say_so_in_one_line_naming_the_bootstrap():
    bootstrap = f"127.0.0.1:{_closed_port()}"
    env = {**__import__("os").environ, "IPR_KAFKA_BOOTSTRAP": bootstrap}
    for args in (["show"], ["show", "acme"], ["set", "acme", "--tolerance", "0.2"],
                 ["delete", "acme"]):
        p = ipr("policy", *args, env=env)
        assert p.returncode == 2, (args, p.stderr)
        [line] = p.stderr.strip().splitlines()  # no traceback, no unclosed-client warning
        assert line.startswith(f"error: cannot reach Kafka at {bootstrap} "), line


def test_a_policy_reader_that_cannot_start_is_closed(caplog):
    import asyncio
    import gc

    import pytest
    from aiokafka.errors import KafkaConnectionError

    from streams.cli.policy import _read, _write
    from streams.kafka.settings import KafkaSettings

    s = KafkaSettings(kafka_bootstrap=f"127.0.0.1:{_closed_port()}")
    with pytest.raises(KafkaConnectionError):
        asyncio.run(_read(s, "router.policies"))
    with pytest.raises(KafkaConnectionError):  # the producer, after the topic (mocked away)
        asyncio.run(_write_without_admin(_write, s))
    gc.collect()
    assert "Unclosed" not in caplog.text


async def _write_without_admin(write, s):
    from unittest import mock

    with mock.patch("streams.kafka.admin.create_topics", mock.AsyncMock()):
        return await write(s, "acme", None)
