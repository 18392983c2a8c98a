"""A label's wait for its routing decision, apart from Faust.

The decisions and the labels are two topics read independently: a label may be read before its
decision. It waits until its deadline (``label_wait_s`` after it was produced, or after the
service started for a backlog) has passed *and* the decisions have been processed up to where
their partitions ended then (asked of the broker), at most :data:`CATCH_UP_WAIT_S` more.

"Processed" means stored in the decision log by ``remember_decisions``, never merely fetched: the
consumer's position runs ahead of the agent by whatever Faust holds in its buffers, so a
partition is counted by the next offset after the last decision the agent handled, or, when it
has handled none of it since the service started, by where the service began reading it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

CATCH_UP_WAIT_S = 120.0  # longest a label waits past label_wait_s for the decisions to catch up
POLL_S = 0.05


def caught_up(ends: dict[int, int], read: dict[int, int], starts: dict[int, int]) -> bool:
    """Whether every decisions partition was processed up to its end in ``ends``: by ``read``
    (partition -> next offset after the last decision processed) or, for a partition with none
    processed, by ``starts`` (partition -> where reading it began: nothing before it is
    pending). No partition (none assigned yet) or an unknown start: not caught up."""
    if not ends:
        return False
    for p, end in ends.items():
        at = read.get(p, starts.get(p))
        if at is None or at < end:
            return False
    return True


async def wait_for_decision(
    lookup: Callable[[], dict | None],
    deadline: float,
    ends_now: Callable[[], Awaitable[dict[int, int] | None]],
    is_caught_up: Callable[[dict[int, int]], Awaitable[bool]],
    clock: Callable[[], float] = time.time,
) -> dict | None:
    """``lookup()`` (the decision, None while unknown) once it is known; None once ``deadline``
    (``clock`` time) has passed and ``is_caught_up`` the ends ``ends_now()`` gave at the first
    look after it (None: unknown, asked again), or :data:`CATCH_UP_WAIT_S` after ``deadline``.

    The decision is looked up again after a verdict of caught up: the decisions read while the
    ends or the verdict were being awaited may include it."""
    ends: dict[int, int] | None = None
    while (decision := lookup()) is None:
        now = clock()
        if now >= deadline + CATCH_UP_WAIT_S:
            break
        if now >= deadline:
            ends = ends or await ends_now()
            if ends is not None and await is_caught_up(ends):
                return lookup()
        await asyncio.sleep(POLL_S)
    return decision
