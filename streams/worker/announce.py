"""What a worker serves, announced on the control topic (``schemas.WorkerServing``): once its
consumers are started, again every ``serving_ttl_s / 3``, and withdrawn with a tombstone when it
stops. Routers route only among the models some live worker announced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka.errors import KafkaError

from schemas import WorkerServing, encode
from schemas.topics import serving_key
from streams.worker.publisher import Publisher

log = logging.getLogger(__name__)


class Announcer:
    def __init__(self, control: str, worker_id: str, models: list[str], ttl_s: float,
                 publisher: Publisher) -> None:
        self.control = control
        self.worker_id = worker_id
        self.models = models
        self.ttl_s = ttl_s
        self.publisher = publisher
        self.announced = 0  # announcements acknowledged (for tests and stats)

    async def announce(self) -> None:
        event = WorkerServing(worker=self.worker_id, models=self.models, announced_at=time.time(),
                              ttl_s=self.ttl_s)
        await (await self.publisher.send(self.control, encode(event), serving_key(self.worker_id)))
        self.announced += 1

    async def run(self, stopping: asyncio.Event) -> None:
        """Announce until ``stopping`` is set; a failed announcement is logged once and retried
        at the next beat (the models stay announced until the last one expires)."""
        failing = False
        while not stopping.is_set():
            try:
                await self.announce()
                if failing:
                    log.warning("worker %s: announcing its models on %s again", self.worker_id,
                                self.control)
                failing = False
            except KafkaError as exc:
                if not failing:
                    log.error("worker %s: could not announce its models on %s (%s); retrying",
                              self.worker_id, self.control, type(exc).__name__)
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.ttl_s / 3)

    async def withdraw(self) -> None:
        """Best effort: a tombstone, so routers stop routing here before the TTL runs out."""
        try:
            await (await self.publisher.send(self.control, None, serving_key(self.worker_id)))
        except Exception as exc:  # noqa: BLE001 - stopping anyway; the announcement expires
            log.warning("worker %s: could not withdraw its models (%s); they expire in %.0f s",
                        self.worker_id, type(exc).__name__, self.ttl_s)
