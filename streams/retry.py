"""Retries with exponential backoff, the one way the services retry: a worker connecting to a
broker that does not answer yet, a reader whose topic the cluster does not list yet, a call to a
model's endpoint.

``retry(call, retry_on=..., backoff=Backoff(first_s, max_s))`` awaits ``call()`` until it
returns; a failure of a ``retry_on`` type is retried after ``backoff.delay(k)`` seconds before
retry k (``first_s * 2**(k-1)``, capped at ``max_s``), any other exception is raised at once. It
stops, raising the last failure, after ``attempts`` calls, or once ``deadline_s`` seconds from the
first have passed (the last wait is cut short, so a call is made at the deadline).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    first_s: float
    max_s: float
    factor: float = 2.0

    def delay(self, retry: int, asked: float | None = None) -> float:
        """Seconds to wait before retry ``retry`` (1, 2, ...): ``asked`` (a server's Retry-After)
        when given, else the backoff's; either within [0, max_s]."""
        wait = self.first_s * self.factor ** (retry - 1) if asked is None else asked
        return min(max(0.0, wait), self.max_s)


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    backoff: Backoff,
    attempts: int | None = None,
    deadline_s: float | None = None,
    asked_delay: Callable[[BaseException], float | None] | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> T:
    """``call()``'s result, retried as the module says. ``asked_delay(exc)`` may name the delay a
    failure asks for; ``on_retry(exc, attempt, delay)`` is called before each wait (to log)."""
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except retry_on as exc:
            delay = backoff.delay(attempt, None if asked_delay is None else asked_delay(exc))
            if attempts is not None and attempt >= attempts:
                raise
            if deadline is not None:  # the last wait is cut short: one more call at the deadline
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                delay = min(delay, left)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
        await asyncio.sleep(delay)
