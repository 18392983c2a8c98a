"""The one retry helper: its delays, its attempts and deadline, and which failures it retries."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

import streams.retry as retry_module
from streams.retry import Backoff, retry


class _Clock:
    """A clock that only the fake sleep moves; ``slept`` lists the waits."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(retry_module, "time", SimpleNamespace(monotonic=c.monotonic))
    monkeypatch.setattr(retry_module, "asyncio", SimpleNamespace(sleep=c.sleep))
    return c


def _failing(times: int, exc: type[BaseException] = ConnectionError):
    """A call that raises ``exc`` ``times`` times, then returns how many calls it took."""
    calls: list[int] = []

    async def call() -> int:
        calls.append(1)
        if len(calls) <= times:
            raise exc(f"failure {len(calls)}")
        return len(calls)

    return call, calls


def test_the_delays_double_from_the_first_up_to_the_cap():
    b = Backoff(first_s=1.0, max_s=10.0)
    assert [b.delay(k) for k in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert Backoff(0.5, 0.5).delay(9) == 0.5  # a constant delay
    assert b.delay(1, asked=3600.0) == 10.0  # a server's Retry-After is capped too
    assert b.delay(5, asked=0.25) == 0.25  # and used in place of the backoff's
    assert b.delay(1, asked=-3.0) == 0.0


def test_a_call_that_recovers_returns_its_result_after_the_backoff(clock):
    call, calls = _failing(3)
    seen: list[tuple[str, int, float]] = []
    out = asyncio.run(retry(call, retry_on=ConnectionError, backoff=Backoff(1.0, 10.0),
                            on_retry=lambda e, n, d: seen.append((str(e), n, d))))
    assert out == 4 and len(calls) == 4
    assert clock.slept == [1.0, 2.0, 4.0]
    assert seen == [("failure 1", 1, 1.0), ("failure 2", 2, 2.0), ("failure 3", 3, 4.0)]


def test_attempts_bound_the_calls_and_the_last_failure_is_raised(clock):
    call, calls = _failing(10)
    with pytest.raises(ConnectionError, match="failure 3"):
        asyncio.run(retry(call, retry_on=ConnectionError, backoff=Backoff(0.5, 30.0),
                          attempts=3))
    assert len(calls) == 3 and clock.slept == [0.5, 1.0]
    with pytest.raises(ValueError, match="attempts must be at least 1, got 0"):
        asyncio.run(retry(call, retry_on=ConnectionError, backoff=Backoff(1, 1), attempts=0))


def test_the_last_wait_is_cut_to_the_deadline_and_a_call_made_there(clock):
    call, calls = _failing(100)
    with pytest.raises(ConnectionError, match="failure 5"):
        asyncio.run(retry(call, retry_on=ConnectionError, backoff=Backoff(1.0, 10.0),
                          deadline_s=10.0))
    # waits 1, 2, 4 (7 s in all); the next, 8 s, is cut to the 3 s left; then the deadline
    assert clock.slept == [1.0, 2.0, 4.0, 3.0] and len(calls) == 5


def test_only_the_named_failures_are_retried(clock):
    call, calls = _failing(5, exc=KeyError)
    with pytest.raises(KeyError):
        asyncio.run(retry(call, retry_on=(ConnectionError, TimeoutError), backoff=Backoff(1, 1)))
    assert len(calls) == 1 and clock.slept == []
    call, calls = _failing(1, exc=TimeoutError)
    assert asyncio.run(retry(call, retry_on=(ConnectionError, TimeoutError),
                             backoff=Backoff(1, 1))) == 2


def test_a_failure_may_ask_for_its_own_delay(clock):
    class Busy(Exception):
        def __init__(self, after: float | None) -> None:
            self.after = after

    asked = iter([Busy(7.0), Busy(None), Busy(99.0)])

    async def call() -> str:
        failure = next(asked, None)
        if failure is not None:
            raise failure
        return "done"

    out = asyncio.run(retry(call, retry_on=Busy, backoff=Backoff(0.5, 30.0),
                            asked_delay=lambda e: e.after))
    assert out == "done" and clock.slept == [7.0, 1.0, 30.0]
