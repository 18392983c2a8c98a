"""A starting service waits for a broker that does not answer (down, or starting), says so once,
and gives up in one line after its timeout; a broker that refuses the client is not waited for."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from unittest import mock

import pytest

from streams.kafka import admin
from streams.kafka.admin import KafkaConnectError, wait_for_cluster


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _waiting(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]


def test_nothing_answering_is_waited_for_up_to_the_timeout_then_one_line(caplog):
    bootstrap = f"127.0.0.1:{_closed_port()}"
    began = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(KafkaConnectError) as e:
        asyncio.run(wait_for_cluster(bootstrap, 2.0, "worker"))
    assert 2.0 <= time.monotonic() - began < 8.0
    assert str(e.value).startswith(f"cannot reach Kafka at {bootstrap} over PLAINTEXT: ")
    assert str(e.value).endswith("; expected an answer within 2 s, none came")
    assert "\n" not in str(e.value) and e.value.unreachable
    [line] = _waiting(caplog)  # once, not once per retry
    assert line.startswith(f"worker: cannot reach Kafka at {bootstrap}")


def test_a_broker_that_comes_up_while_waiting_is_used(caplog):
    down = KafkaConnectError("cannot reach Kafka at b:1 over PLAINTEXT: refused", True)
    answers = mock.AsyncMock(side_effect=[down, down, down, 3])
    with caplog.at_level(logging.WARNING), mock.patch.object(admin, "broker_count", answers):
        assert asyncio.run(wait_for_cluster("b:1", 30.0, "worker")) == 3
    assert answers.await_count == 4
    assert len(_waiting(caplog)) == 1
    assert any("answered after" in r.getMessage() for r in caplog.records)


def test_a_broker_that_refuses_the_client_is_not_waited_for(caplog):
    refused = KafkaConnectError("cannot reach Kafka at b:1 over SASL_SSL: "
                                "SaslAuthenticationFailed", False)
    answers = mock.AsyncMock(side_effect=[refused])
    with mock.patch.object(admin, "broker_count", answers), pytest.raises(KafkaConnectError):
        asyncio.run(wait_for_cluster("b:1", 30.0, "worker"))
    assert answers.await_count == 1 and not _waiting(caplog)


def test_which_connection_errors_mean_that_nothing_answered():
    import ssl

    from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

    assert admin._unanswered(ConnectionRefusedError(111, "refused"))
    assert admin._unanswered(TimeoutError())
    assert admin._unanswered(KafkaConnectionError("Unable to bootstrap"))
    assert not admin._unanswered(ssl.SSLCertVerificationError("CERTIFICATE_VERIFY_FAILED"))
    assert not admin._unanswered(SaslAuthenticationFailed("wrong password"))


def test_ipr_worker_waits_for_its_start_timeout_then_fails_in_one_line():
    bootstrap = f"127.0.0.1:{_closed_port()}"
    env = {**os.environ, "IPR_KAFKA_BOOTSTRAP": bootstrap, "IPR_WORKER_START_TIMEOUT_S": "3",
           "IPR_WORKER_KNOWN_MODELS": '["m"]'}
    began = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "streams.cli", "worker", "--backend", "openai",
                        "--model", "m"], capture_output=True, text=True, timeout=120, env=env)
    assert time.monotonic() - began >= 3.0  # it used to exit in 0.4 s
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2, lines  # that it waits (logged once), then the error
    assert "waiting up to 3 s" in lines[0]
    assert lines[1].startswith(f"error: cannot reach Kafka at {bootstrap} over PLAINTEXT: ")
    assert lines[1].endswith("expected an answer within 3 s, none came")
