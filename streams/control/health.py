"""Model health: workers report a model whose calls keep failing; routers leave it out.

A worker counts its model's failed calls in a row (:class:`ErrorStreak`: an error response, or a
prompt forwarded to the next model by failover). At ``unhealthy_after`` of them it reports the
model unhealthy on ``router.control`` (:class:`schemas.ModelHealth`, key
``schemas.topics.health_key(model)``), again every ``ttl_s / 2`` while the errors go on, and
healthy at its first success after that. Every router reads every report (:class:`HealthBoard`)
and leaves an unhealthy model out of the candidates until the report expires or a healthy report
arrives. The last report of a model wins, whichever worker sent it.
When every candidate of a prompt is unhealthy, the router routes among them anyway: the model's
worker answers with an error response, so the prompt is not lost.

No Kafka here: the worker (``streams.worker``) and the router (``streams.router``) send and read
the events. Both sides of the protocol live here, together.
"""

from __future__ import annotations

from schemas import ModelHealth


class ErrorStreak:
    """One model's error responses in a row, in one worker process; says when to report."""

    def __init__(self, model_id: str, worker: str, unhealthy_after: int, ttl_s: float) -> None:
        self.model_id, self.worker = model_id, worker
        self.unhealthy_after, self.ttl_s = unhealthy_after, ttl_s
        self.errors = 0
        self.unhealthy = False
        self._reported_at = 0.0

    def observe(self, error: str | None, now: float) -> ModelHealth | None:
        """Count one call's outcome (``error`` None: a success); the report to send, if any.
        ``unhealthy_after`` 0 never reports."""
        if error is None:
            self.errors = 0
            if not self.unhealthy:
                return None
            self.unhealthy = False
            return self._report(True, None, now)
        self.errors += 1
        if not self.unhealthy_after or self.errors < self.unhealthy_after:
            return None
        if self.unhealthy and now - self._reported_at < self.ttl_s / 2:
            return None
        self.unhealthy = True
        return self._report(False, error, now)

    def _report(self, healthy: bool, error: str | None, now: float) -> ModelHealth:
        self._reported_at = now
        return ModelHealth(
            model_id=self.model_id, healthy=healthy, worker=self.worker,
            consecutive_errors=self.errors, error=error, reported_at=now, ttl_s=self.ttl_s,
        )


class HealthBoard:
    """What a router knows of every model's health: the latest report of each."""

    def __init__(self) -> None:
        self._latest: dict[str, ModelHealth] = {}
        self._expires: dict[str, float] = {}

    def apply(self, report: ModelHealth, received_at: float) -> bool:
        """Take a report read at ``received_at``; False when an earlier one is newer (a
        reordered or replayed report). An unhealthy report holds ``ttl_s`` from when it was
        sent, or from when it was read if the sender's clock is ahead of this one."""
        old = self._latest.get(report.model_id)
        if old is not None and old.reported_at > report.reported_at:
            return False
        self._latest[report.model_id] = report
        self._expires[report.model_id] = min(report.reported_at, received_at) + report.ttl_s
        return True

    def unhealthy(self, now: float) -> frozenset[str]:
        return frozenset(
            m for m, r in self._latest.items() if not r.healthy and now < self._expires[m]
        )
