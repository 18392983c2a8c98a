"""Waiting for a state, not for a time: poll a condition until it holds.

The deadline only bounds a failure (a busy machine is slow, not wrong), so it is generous; a test
never sleeps a fixed time to let something happen. To show that something does *not* happen, wait
for a later marker instead (a sentinel sent after the events under test, whose outcome proves they
were all processed), then assert on what came before it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

WAIT_S = 120.0  # bounds a failure only: a state that holds ends the wait at once
INTERVAL_S = 0.2


def _failure(timeout: float, why: Callable[[], object]) -> AssertionError:
    return AssertionError(f"not within {timeout:.0f} s: {why()}")


def wait_until(condition: Callable[[], T], timeout: float = WAIT_S,
               why: Callable[[], object] = lambda: "", interval: float = INTERVAL_S) -> T:
    """Poll ``condition()`` until it returns a truthy value, and return that value. An
    exception it raises (e.g. an assertion that a service is still running) ends the wait at
    once; past ``timeout`` the wait fails with ``why()``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise _failure(timeout, why)
        time.sleep(interval)
    return value


async def eventually(condition: Callable[[], T | Awaitable[T]], timeout: float = WAIT_S,
                     why: Callable[[], object] = lambda: "", interval: float = INTERVAL_S) -> T:
    """:func:`wait_until` on the event loop; ``condition`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise _failure(timeout, why)
        await asyncio.sleep(interval)


def wait_for_log(service: Any, text: str, timeout: float = WAIT_S, count: int = 1) -> None:
    """Until ``service`` (a :class:`benchmarks.processes.Service`) has logged ``text``
    ``count`` times; fails at once if it exits."""

    def logged() -> bool:
        assert service.alive(), service.log_tail()
        return service.log_tail(10**8).count(text) >= count

    wait_until(logged, timeout, why=lambda: f"{text!r} x{count} in {service.log_tail()}")
