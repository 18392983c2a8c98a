"""The tests' waits (tests/waits.py): they end as soon as the state holds, fail past the deadline
with the reason, and let an assertion of the condition end them at once."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.waits import eventually, wait_for_log, wait_until


def test_wait_until_returns_the_value_once_the_condition_holds():
    calls = itertools.count(1)
    assert wait_until(lambda: (n := next(calls)) >= 3 and n, interval=0.01) == 3


def test_wait_until_fails_past_the_deadline_with_the_reason():
    began = time.monotonic()
    with pytest.raises(AssertionError, match="not within 0 s: still 7"):
        wait_until(lambda: False, timeout=0.1, why=lambda: "still 7", interval=0.01)
    assert time.monotonic() - began < 5


def test_an_assertion_in_the_condition_ends_the_wait_at_once():
    def dead() -> bool:
        raise AssertionError("the service exited")

    with pytest.raises(AssertionError, match="the service exited"):
        wait_until(dead, timeout=60)


def test_eventually_awaits_a_coroutine_condition():
    calls = itertools.count(1)

    async def third() -> int | None:
        n = next(calls)
        return n if n >= 3 else None

    assert asyncio.run(eventually(third, interval=0.01)) == 3
    with pytest.raises(AssertionError, match="not within"):
        asyncio.run(eventually(lambda: 0, timeout=0.05, interval=0.01))


class FakeService:
    def __init__(self, log: str, alive: bool = True) -> None:
        self.log, self.running = log, alive

    def alive(self) -> bool:
        return self.running

    def log_tail(self, chars: int = 3000) -> str:
        return self.log[-chars:]


def test_wait_for_log_counts_the_text_and_fails_when_the_service_exited():
    wait_for_log(FakeService("up\nup\n"), "up", count=2, timeout=1)
    with pytest.raises(AssertionError, match="x3"):
        wait_for_log(FakeService("up\nup\n"), "up", count=3, timeout=0.1)
    with pytest.raises(AssertionError, match="crashed"):
        wait_for_log(FakeService("crashed", alive=False), "up", timeout=60)
