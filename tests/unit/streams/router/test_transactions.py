"""Group commit of the exactly-once router: the batches queued while a partition's transaction
commits share its next one; a lone batch is committed at once; a failure reaches every batch of its
transaction; a close lets the transaction under way finish and leaves what is queued to the next
owner. (The transactions themselves run on the real broker: tests/integration/streams/router/
test_exactly_once.py.)"""

from __future__ import annotations

import asyncio

import pytest

from streams.kafka.settings import KafkaSettings
from streams.router.transactions import Transactions


class Recording(Transactions):
    """Transactions whose commit records what it got and waits to be let go."""

    def __init__(self) -> None:
        super().__init__(KafkaSettings(), "group", "prompts.in")
        self.commits: list[tuple[int, list, int]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def commit(self, partition, outputs, next_offset) -> bool:
        self.commits.append((partition, [o[2] for o in outputs], next_offset))
        self.started.set()
        await self.release.wait()
        self.release.clear()
        if self.fail is not None:
            raise self.fail
        return True


def out(value: bytes):
    return ("prompts.routed.m", b"k", value, None)


def test_batches_queued_during_a_commit_share_the_next_transaction():
    async def scenario():
        t = Recording()
        first = t.add(0, [out(b"a")], 11)
        await t.started.wait()  # the lone batch is committing on its own
        later = [t.add(0, [out(b"b")], 12), t.add(0, [out(b"c"), out(b"d")], 14)]
        other = t.add(1, [out(b"x")], 3)  # another partition: its own committer
        t.release.set()
        assert await first is True
        while len(t.commits) < 3:
            t.release.set()
            await asyncio.sleep(0)
        t.release.set()
        assert await asyncio.gather(*later, other) == [True, True, True]
        return t.commits

    commits = asyncio.run(scenario())
    assert sorted(commits) == [(0, [b"a"], 11), (0, [b"b", b"c", b"d"], 14), (1, [b"x"], 3)]


def test_a_failed_transaction_fails_every_batch_it_held():
    async def scenario():
        t = Recording()
        t.add(0, [out(b"a")], 1)
        await t.started.wait()
        held = [t.add(0, [out(b"b")], 2), t.add(0, [out(b"c")], 3)]
        t.release.set()
        await asyncio.sleep(0)
        t.fail = RuntimeError("fenced")
        t.release.set()
        return await asyncio.gather(*held, return_exceptions=True)

    got = asyncio.run(scenario())
    assert [str(e) for e in got] == ["fenced", "fenced"]


def test_a_close_lets_the_transaction_under_way_finish_and_leaves_the_queue():
    async def scenario():
        t = Recording()
        committing = t.add(0, [out(b"a")], 1)
        await t.started.wait()
        queued = t.add(0, [out(b"b")], 2)
        closing = asyncio.ensure_future(t.close([0]))
        await asyncio.sleep(0.05)
        assert not closing.done()  # waits for the transaction under way
        t.release.set()
        await closing
        return await committing, await queued, t.commits

    committed, queued, commits = asyncio.run(scenario())
    assert committed is True and queued is False
    assert commits == [(0, [b"a"], 1)]  # the queued batch was not committed by this router


@pytest.mark.parametrize("partitions", [None, [0]])
def test_closing_an_idle_committer_stops_it(partitions):
    async def scenario():
        t = Recording()
        t.release.set()
        assert await t.add(0, [out(b"a")], 1) is True
        await t.close(partitions)
        return t._committers

    assert asyncio.run(scenario()) == {}


def test_a_partitions_transactions_start_at_most_once_per_interval():
    async def scenario():
        t = Recording()
        t.interval_s = 3600.0  # the next may not start within the test
        t.release.set()
        assert await t.add(0, [out(b"a")], 1) is True  # the first starts at once
        waiting = t.add(0, [out(b"b")], 2)
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await t.close()
        return await waiting, t.commits

    waiting, commits = asyncio.run(scenario())
    assert waiting is False and commits == [(0, [b"a"], 1)]
