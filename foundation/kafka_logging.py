"""Settings every long-running Kafka client shares, so a broker outage is ridden out quietly.

librdkafka reconnects by itself, but by default every 100 ms per connection and with one log line
per failed attempt written straight to stderr: about 20 lines a second per client during an
outage. Here each client backs off to one attempt every few seconds, and its log lines go through
Python logging with :class:`LogThrottle`, which lets one line per kind through per minute and
says how many it held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

QUIET_CONFIG: dict[str, Any] = {
    "reconnect.backoff.ms": 1000,  # first retry after a second: a restarting broker is back within seconds
    "reconnect.backoff.max.ms": 10_000,  # then at most every 10 s, so an outage costs little and ends fast
    "log.connection.close": False,  # an idle connection closed by the broker is no news
}
THROTTLE_SECONDS = 60.0
"""Per kind of client and kind of message (librdkafka's facility, e.g. FAIL), one line per this period."""
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 1.0, 30.0
"""Waits between a service's own attempts to reach something that is away (a topic, the schema
registry): doubling from the first, a broker restart is ridden out in seconds, to the most, so a
long outage costs an attempt every half minute."""


def retry_wait(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    The exponent is capped: an outage of days (thousands of attempts) must not overflow the float and
    stop the thread that is riding it out."""
    return min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** min(max(0, attempt - 1), 30))


def _librdkafka_key(record: logging.LogRecord) -> tuple[str, str]:
    # confluent-kafka logs (fmt, facility, client name, text); one key per kind of client (the logger) and
    # facility, whatever the client's instance number: a client made again after an error is the same kind.
    args = record.args if isinstance(record.args, tuple) else ()
    return record.name, str(args[0]) if args else record.getMessage()[:40]


def message_key(record: logging.LogRecord) -> tuple[str, str]:
    """One key per logger and message template (its text before the arguments are filled in)."""
    return record.name, str(record.msg)


class LogThrottle(logging.Filter):
    """Let the first record of each key through, then one per ``period`` with a count.

    The default key is librdkafka's (kind of client, facility); :func:`message_key` suits Python
    client libraries (aiokafka, Faust), whose every failed reconnect is a line of the same template.
    ``applies`` limits the throttle to some records (others always pass).
    """

    def __init__(self, period: float = THROTTLE_SECONDS,
                 key: Callable[[logging.LogRecord], tuple[str, str]] = _librdkafka_key,
                 applies: Callable[[logging.LogRecord], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.period = period
        self.clock = clock
        self.key = key
        self.applies = applies
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.applies is not None and not self.applies(record):
            return True
        key = self.key(record)
        now = self.clock()
        with self._lock:
            if now - self._last.get(key, float("-inf")) < self.period:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.period:.0f} s)"
        return True


CLIENT_LIBRARIES = ("aiokafka", "faust", "mode")
"""Python Kafka client libraries whose warnings and errors repeat on every failed reconnect."""


def client_library_throttle(period: float = THROTTLE_SECONDS,
                            clock: Callable[[], float] = time.monotonic) -> LogThrottle:
    """A throttle for the warnings and errors of :data:`CLIENT_LIBRARIES`, to put on a process's log
    handlers: during a broker outage aiokafka writes a few lines per reconnect attempt, several a
    second; with it, each kind of line appears once a minute with a count."""
    return LogThrottle(period, key=message_key, clock=clock,
                       applies=lambda r: r.levelno >= logging.WARNING and r.name.split(".")[0] in CLIENT_LIBRARIES)


def client_logger(name: str) -> logging.Logger:
    """A logger for one kind of librdkafka client, throttled (passed as the client's ``logger``)."""
    logger = logging.getLogger(f"wattsup.kafka.{name}")
    if not any(isinstance(f, LogThrottle) for f in logger.filters):
        logger.addFilter(LogThrottle())
    return logger


def quiet_config(name: str) -> dict[str, Any]:
    """:data:`QUIET_CONFIG` plus the throttled logger for a client of kind ``name``.

    librdkafka then hands its log lines to the client's poll/consume calls instead of stderr, so
    each client must be polled regularly (every one here is).
    """
    return {**QUIET_CONFIG, "logger": client_logger(name)}


class RateLimitedLog:
    """A service's own outage messages: the first of a kind at once, then at most one per ``period``.

    ``recovered`` logs the end of an outage (only if one was logged), so the log shows when it ended.
    """

    def __init__(self, logger: logging.Logger, period: float = THROTTLE_SECONDS) -> None:
        self.logger = logger
        self.period = period
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, float("-inf")) < self.period:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        self.logger.warning(message + (f" ({held} similar messages held back)" if held else ""), *args)

    def recovered(self, kind: str, message: str, *args: Any) -> None:
        if self._last.pop(kind, None) is not None:
            self._held.pop(kind, None)
            self.logger.warning("recovered: " + message, *args)
        else:
            self.logger.info(message, *args)
