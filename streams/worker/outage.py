"""A broker outage in two log lines, not thousands.

While Kafka does not answer, aiokafka's clients (a consumer per model, the producer) log every
retry at ERROR: a 34 s outage of a worker serving 28 models wrote about 2,400 lines. A
:class:`KafkaOutage` filter on aiokafka's loggers lets none of those connection errors through;
the first one of an outage becomes one line of the worker's own (connected -> lost), and
:meth:`KafkaOutage.watch` asks the cluster until it answers and the clients have been quiet a
moment, then says so in one line (lost -> back). Any other aiokafka record passes as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time

from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError

from streams.kafka.admin import KafkaAdminError, broker_count
from streams.kafka.clients import Kafka, bootstrap_of

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (KafkaConnectionError, NodeNotReadyError, RequestTimedOutError, OSError,
                      TimeoutError)
_CONNECTION_TEXT = re.compile(  # records whose arguments carry no error object
    r"Unable to update metadata|Heartbeat session expired|Marking the coordinator dead|"
    r"is either not started or not (ready|valid)")


def is_connection_error(record: logging.LogRecord) -> bool:
    """Whether an aiokafka record says that a broker did not answer (a retry follows)."""
    if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
        return False
    args = record.args if isinstance(record.args, tuple) else ()
    if any(isinstance(a, _CONNECTION_ERRORS) and not isinstance(a, ssl.SSLError) for a in args):
        return True
    return isinstance(record.msg, str) and bool(_CONNECTION_TEXT.search(record.msg))


class KafkaOutage(logging.Filter):
    """One line when Kafka stops answering, one when it is back; its clients' retries unlogged."""

    def __init__(self, who: str, kafka: Kafka, quiet_s: float = 3.0) -> None:
        super().__init__()
        self.who, self.kafka, self.quiet_s = who, kafka, quiet_s
        self.lost_at: float | None = None  # monotonic, while lost
        self.last_error_at = 0.0
        self.hidden = 0
        self._down = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loggers: list[logging.Logger] = []

    def install(self) -> None:
        """Filter every aiokafka logger (they exist once aiokafka is imported)."""
        self._loop = asyncio.get_running_loop()
        names = [n for n in logging.root.manager.loggerDict
                 if n == "aiokafka" or n.startswith("aiokafka.")]
        self._loggers = [logging.getLogger(n) for n in sorted({"aiokafka", *names})]
        for logger in self._loggers:
            logger.addFilter(self)

    def remove(self) -> None:
        for logger in self._loggers:
            logger.removeFilter(self)
        self._loggers = []

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_connection_error(record):
            return True
        self.last_error_at = time.monotonic()
        self.hidden += 1
        if self.lost_at is None:
            self.lost_at, self.hidden = self.last_error_at, 0
            log.error("%s: Kafka at %s stopped answering (%s); its clients retry, unlogged "
                      "until it answers again", self.who, bootstrap_of(self.kafka),
                      record.getMessage())
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._down.set)
        return False

    def back(self) -> None:
        """Lost -> back: say so once (with how long, and how many errors were not logged)."""
        if self.lost_at is None:
            return
        log.warning("%s: Kafka at %s answers again after %.1f s (%d retried errors not logged)",
                    self.who, bootstrap_of(self.kafka), time.monotonic() - self.lost_at,
                    self.hidden)
        self.lost_at, self.hidden = None, 0
        self._down.clear()

    async def watch(self, stopping: asyncio.Event, every_s: float = 1.0) -> None:
        """Until ``stopping``: after each loss, ask the cluster every ``every_s`` until it
        answers and no client error came for ``quiet_s``, then :meth:`back`."""
        while not stopping.is_set():
            down, stop = (asyncio.ensure_future(e.wait()) for e in (self._down, stopping))
            await asyncio.wait([down, stop], return_when=asyncio.FIRST_COMPLETED)
            down.cancel()
            stop.cancel()
            while self.lost_at is not None and not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), every_s)
                if time.monotonic() - self.last_error_at >= self.quiet_s and await self._answers():
                    self.back()

    async def _answers(self) -> bool:
        try:
            return await broker_count(self.kafka, 5.0) > 0
        except KafkaAdminError:
            return False
