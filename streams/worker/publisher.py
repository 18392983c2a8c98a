"""What a model's loop sends through: the worker's one producer, and the record of answered
attempts (``streams.worker.dedupe``). The worker connects it and hands it to each loop, so a
loop knows nothing of the worker that runs it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from streams.worker.dedupe import Answered, AnsweredLog
from streams.worker.failover import attempt_key


class Publisher:
    def __init__(self, answered: Answered, answered_log: AnsweredLog) -> None:
        self.producer: AIOKafkaProducer | None = None  # set while the worker is connected
        self.answered = answered  # shared by the models served
        self.answered_log = answered_log

    def seen(self, prompt_id: str, attempt: int) -> bool:
        """Whether this attempt of the prompt was answered already (and mark it answered)."""
        return self.answered.check_and_add(attempt_key(prompt_id, attempt))

    async def send(self, topic: str, value: bytes | None, key: bytes | None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future:
        """Append a record; the returned future resolves when the broker acknowledged it."""
        assert self.producer is not None, "the worker is not connected"
        return await self.producer.send(topic, value, key=key, headers=headers)

    async def answered_record(self, prompt_id: str, attempt: int,
                              model_id: str) -> list[asyncio.Future]:
        """Record that ``model_id`` answered this attempt (nothing when the log is off)."""
        if not self.answered_log.enabled:
            return []
        key = attempt_key(prompt_id, attempt).encode("utf-8")
        return [await self.send(self.answered_log.topic, model_id.encode("utf-8"), key)]
