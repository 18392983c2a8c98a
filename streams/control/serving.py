"""Which models a live worker serves: workers announce it (``schemas.WorkerServing`` on
``router.control``, key ``serving:<worker>``, renewed every third of its TTL, a tombstone when the
worker stops: ``streams.worker.announce``), and every router keeps the latest announcement of each
worker (:class:`ServingBoard`). A router routes only among the models some worker serves now; a
model whose last worker stopped, or whose announcements expired (a worker killed), is left out
like an unhealthy one (``ipr_model.serving.candidates``). Before any worker has announced anything
(workers that predate announcements, a router alone in a test) nothing is left out.

No Kafka here: the worker and the router send and read the events.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas import WorkerServing


class ServingBoard:
    def __init__(self) -> None:
        self._latest: dict[str, WorkerServing] = {}
        self._expires: dict[str, float] = {}
        self.heard = False  # any announcement read yet

    def apply(self, worker: str, announcement: WorkerServing | None, received_at: float) -> None:
        """Take a worker's announcement (None: its tombstone) read at ``received_at``; it holds
        ``ttl_s`` from when it was sent, or from when it was read if the sender's clock is ahead."""
        if announcement is None:
            self._latest.pop(worker, None)
            self._expires.pop(worker, None)
            return
        old = self._latest.get(worker)
        if old is not None and old.announced_at > announcement.announced_at:
            return
        self.heard = True
        self._latest[worker] = announcement
        self._expires[worker] = min(announcement.announced_at, received_at) + announcement.ttl_s

    def served(self, now: float) -> frozenset[str]:
        return frozenset(m for w, a in self._latest.items() if now < self._expires[w]
                         for m in a.models)

    def unserved(self, known: Iterable[str], now: float) -> frozenset[str]:
        """The ``known`` models no live worker serves (none before any announcement)."""
        if not self.heard:
            return frozenset()
        return frozenset(known) - self.served(now)
