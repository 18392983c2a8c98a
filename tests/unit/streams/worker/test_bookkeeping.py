"""A worker's bookkeeping (commit points, answered ids) and the mistakes it refuses before it
connects to anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from streams.worker.dedupe import Answered, start_offsets
from streams.worker.offsets import PartitionOffsets
from streams.worker.run import serve
from streams.worker.service import Worker, WorkerConfigError
from streams.worker.settings import WorkerSettings


def test_config_mistakes_are_reported_before_connecting(tmp_path: Path) -> None:
    settings = WorkerSettings(kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(WorkerConfigError, match="needs a dataset folder"):
        asyncio.run(serve(settings, [], "replay"))
    with pytest.raises(WorkerConfigError, match="at least one --model"):
        asyncio.run(serve(settings, [], "openai"))
    with pytest.raises(WorkerConfigError, match="share topic"):
        Worker(settings, ["a/b", "a:b"], lambda _m: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(WorkerConfigError, match="backend must be"):
        asyncio.run(serve(settings, ["x"], "nope"))
    with pytest.raises(WorkerConfigError, match="needs the artifacts whose models it serves"):
        asyncio.run(serve(settings, ["x"], "openai"))


def test_an_openai_worker_refuses_a_model_it_does_not_know(small_artifacts: Path) -> None:
    known = WorkerSettings(kafka_bootstrap="127.0.0.1:1", known_models=["gpt-4o", "llama"])
    with pytest.raises(WorkerConfigError, match=r"model\(s\) gpt-4 not in IPR_WORKER_KNOWN_MODELS; "
                                                r"known: gpt-4o, llama"):
        asyncio.run(serve(known, ["gpt-4o", "gpt-4"], "openai"))
    settings = WorkerSettings(kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(
        WorkerConfigError, match=f"model\\(s\\) typo not in artifacts {small_artifacts}"
    ):
        asyncio.run(serve(settings, ["typo"], "openai", artifacts=small_artifacts))


def test_commit_point_is_the_highest_contiguous_completed_offset() -> None:
    offsets = PartitionOffsets()
    for o in (5, 6, 7, 8):
        offsets.add(o)
    offsets.done(7)
    offsets.done(6)
    assert offsets.commit_at is None  # 5 is still in flight
    offsets.done(5)
    assert offsets.commit_at == 8  # 5, 6, 7 done; 8 in flight
    offsets.done(8)
    assert offsets.commit_at == 9


def test_once_idle_the_commit_point_passes_a_transactions_markers() -> None:
    offsets = PartitionOffsets()
    offsets.add(5)
    offsets.caught_up_to(8)  # 5 in flight: its offset is not committable yet
    assert offsets.commit_at is None
    offsets.done(5)
    assert offsets.commit_at == 6
    offsets.caught_up_to(8)  # the consumer stepped over a commit marker and aborted records
    assert offsets.commit_at == 8
    offsets.caught_up_to(7)  # never back
    assert offsets.commit_at == 8


def test_answered_ids_are_the_last_size_ids() -> None:
    answered = Answered(size=2)
    assert [answered.check_and_add(i) for i in ("a", "b", "a", "c")] == [False, False, True, False]
    assert len(answered) == 2
    assert answered.check_and_add("a") is False  # the oldest, forgotten when "c" came
    assert answered.check_and_add("c") is True
    assert Answered(size=0).check_and_add("a") is False  # off


def test_answered_ids_agree_with_a_plain_model_through_many_evictions() -> None:
    """Random ids, many repeated, through a small table (every run of probes and every
    backward shift of a deletion exercised), against a set and a queue of the same ids."""
    import random
    from collections import deque

    rng = random.Random(7)
    answered, kept, order = Answered(size=50), set(), deque()
    for _ in range(20_000):
        pid = f"p-{rng.randrange(400)}"
        expected = pid in kept
        if not expected:
            kept.add(pid)
            order.append(pid)
            if len(order) > 50:
                kept.discard(order.popleft())
        assert answered.check_and_add(pid) is expected
    assert len(answered) == 50


def test_answered_ids_take_their_memory_up_front() -> None:
    answered = Answered(size=1000)
    before = (answered._table.buffer_info(), answered._ring.buffer_info())
    for i in range(5000):
        answered.check_and_add(f"soak-{i}:{i * 7919}")
    assert (answered._table.buffer_info(), answered._ring.buffer_info()) == before
    assert answered.check_and_add(f"soak-4999:{4999 * 7919}") is True


def test_a_partition_revoked_while_its_commit_is_in_flight_does_not_stop_the_worker() -> None:
    from aiokafka import TopicPartition

    worker = Worker(WorkerSettings(kafka_bootstrap="127.0.0.1:1"), ["m"], lambda _m: None)
    loop = worker._loops["m"]
    tp = TopicPartition("prompts.routed.m", 0)
    loop.offsets[tp] = PartitionOffsets()
    loop.offsets[tp].add(0)
    loop.offsets[tp].done(0)

    class Consumer:  # a broker restart: the group rebalances while the commit is answered
        def assignment(self):
            return set()

        async def commit(self, due) -> None:
            assert due == {tp: 1}
            loop.offsets.pop(tp)

    loop.consumer = Consumer()
    asyncio.run(loop._commit())  # raised KeyError, which ended the worker's loop
    assert tp not in loop.offsets


def test_a_starting_worker_reads_about_its_window_of_answered_ids_back() -> None:
    tps = [TopicPartition("a", p) for p in range(4)]
    begin = dict(zip(tps, [0, 0, 5, 0], strict=True))
    end = dict(zip(tps, [100, 10, 50, 0], strict=True))
    assert start_offsets(begin, end, 100) == dict(zip(tps, [75, 0, 25, 0], strict=True))
    assert start_offsets(begin, end, 10**6) == begin
