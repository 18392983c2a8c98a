"""A broker outage logs two lines per worker (lost, back), not one per client retry."""

from __future__ import annotations

import asyncio
import logging
from unittest import mock

import pytest
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError

from streams.worker import outage
from streams.worker.outage import KafkaOutage, is_connection_error

FETCHER = logging.getLogger("aiokafka.consumer.fetcher")
CLIENT = logging.getLogger("aiokafka")
COORDINATOR = logging.getLogger("aiokafka.consumer.group_coordinator")


def _retries(n: int) -> None:
    """What aiokafka's clients log while the broker is down, ``n`` times over."""
    for _ in range(n):
        CLIENT.error("Unable connect to node with id %s: %s", 1,
                     ConnectionRefusedError(111, "Connect call failed"))
        CLIENT.error("Unable to update metadata from %s", [1])
        FETCHER.error("Failed fetch messages from %s: %s", 1, NodeNotReadyError("not ready"))
        COORDINATOR.error("Group Coordinator Request failed: %s", NodeNotReadyError("not ready"))
        COORDINATOR.warning("Heartbeat failed for group %s: coordinator (node %s) is either not "
                            "started or not valid", "g", 1)


@pytest.fixture(autouse=True)
def _aiokafka_logs_warnings():
    """The lab's commands quiet aiokafka (level CRITICAL) in-process; a test run before this one
    may have left that behind, and a record below a logger's level never reaches a filter."""
    loggers = [logging.getLogger(n) for n in ("aiokafka", *sorted(
        n for n in logging.root.manager.loggerDict if n.startswith("aiokafka.")))]
    levels = [(lg, lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.NOTSET)
        lg.disabled = False
    yield
    for lg, level, disabled in levels:
        lg.setLevel(level)
        lg.disabled = disabled


def _ours(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == outage.__name__]


def test_connection_errors_are_told_from_the_rest():
    def record(name, level, msg, *args):
        return logging.LogRecord(name, level, __file__, 1, msg, args, None)

    assert is_connection_error(record("aiokafka", logging.ERROR, "Unable connect to node with id "
                                      "%s: %s", 1, OSError(111, "refused")))
    assert is_connection_error(record("aiokafka.consumer.fetcher", logging.ERROR,
                                      "Failed fetch messages from %s: %s", 1,
                                      KafkaConnectionError("closed")))
    assert is_connection_error(record("aiokafka", logging.ERROR,
                                      "Unable to update metadata from %s", [1]))
    assert not is_connection_error(record("aiokafka", logging.ERROR,
                                          "Topic %s not found in cluster metadata", "t"))
    assert not is_connection_error(record("aiokafka", logging.INFO, "Unable to update metadata"))
    assert not is_connection_error(record("streams.worker", logging.ERROR, "%s", OSError()))


def test_an_outage_is_two_lines_whatever_the_retries(caplog):
    settings = mock.Mock(kafka_bootstrap="127.0.0.1:9")

    async def scenario() -> None:
        watch = KafkaOutage("worker", settings)
        watch.install()
        try:
            with caplog.at_level(logging.WARNING):
                _retries(200)  # 28 models' consumers over a 34 s outage: ~2,400 lines before
                CLIENT.error("Topic %s not found in cluster metadata", "t")  # not an outage
                watch.back()
                watch.back()  # no change, no line
                _retries(3)  # a second outage
        finally:
            watch.remove()
        _retries(1)  # removed: aiokafka's own lines again

    asyncio.run(scenario())
    lost, back, again = _ours(caplog)
    assert lost.startswith("worker: Kafka at 127.0.0.1:9 stopped answering (Unable connect to "
                           "node with id 1: [Errno 111] Connect call failed)")
    assert back.startswith("worker: Kafka at 127.0.0.1:9 answers again after ")
    assert back.endswith("(999 retried errors not logged)")
    assert again.startswith("worker: Kafka at 127.0.0.1:9 stopped answering")
    aiokafka = [r.getMessage() for r in caplog.records if r.name.startswith("aiokafka")]
    assert aiokafka[0] == "Topic t not found in cluster metadata" and len(aiokafka) == 6


def test_the_watch_says_back_once_the_cluster_answers_and_the_clients_are_quiet(caplog):
    settings = mock.Mock(kafka_bootstrap="127.0.0.1:9")
    answers = mock.AsyncMock(side_effect=[outage.KafkaAdminError("no"), 0, 1, 1, 1])

    async def scenario() -> None:
        watch = KafkaOutage("worker", settings, quiet_s=0.0)
        watch.install()
        stopping = asyncio.Event()
        task = asyncio.create_task(watch.watch(stopping, every_s=0.01))
        try:
            with mock.patch.object(outage, "broker_count", answers):
                _retries(5)
                while watch.lost_at is not None:  # the state, not a fixed sleep
                    await asyncio.sleep(0.01)
                assert answers.await_count == 3  # refused, no broker yet, then answered
                stopping.set()
                await asyncio.wait_for(task, 5)
        finally:
            watch.remove()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert [m.split(" (")[0].split(" after")[0] for m in _ours(caplog)] == [
        "worker: Kafka at 127.0.0.1:9 stopped answering",
        "worker: Kafka at 127.0.0.1:9 answers again"]
