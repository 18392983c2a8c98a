"""Committable offsets of one partition while calls finish out of order.

Up to `concurrency` records per model are in flight, so they finish out of order: per partition
the committed offset is the highest contiguous completed offset + 1. Once nothing is pending, it is
the consumer's position: read `read_committed`, a topic written in transactions (an exactly-once
router's) ends in commit markers and may hold aborted records, which the consumer steps over and
never returns, and a group that committed only past its last record would lag behind the end for
ever.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Offsets of one partition dispatched but not yet committable, in arrival (= offset) order."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self.commit_at: int | None = None  # next offset to consume = last contiguous done + 1
        self.committed: int | None = None

    def add(self, offset: int) -> None:
        self._pending.append(offset)

    def done(self, offset: int) -> None:
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            head = self._pending.popleft()
            self._done.discard(head)
            self.commit_at = head + 1

    def caught_up_to(self, position: int) -> None:
        """The consumer's ``position`` in the partition, once every record it returned is done."""
        if not self._pending and position > (self.commit_at or 0):
            self.commit_at = position
