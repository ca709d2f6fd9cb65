"""Riding out what is away for a while, inside the worker's agent: the schema registry, the broker.

A message that cannot be decoded because the schema registry is away is fine and must not be
dead-lettered; a take-over that cannot read back the emitted anomalies because the broker is away
must not guess. Crashing would not help either: Faust restarts a crashed agent, the batch it held
is lost to it, and the log fills with tracebacks. So the agent waits and tries the same step of
the same batch again, with the backoff every service uses (:func:`foundation.kafka_logging.retry_wait`),
and says so in a line a minute at most.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from foundation.kafka_logging import RateLimitedLog, retry_wait
from schemas.registry import RegistryUnavailableError
from stream_processors.emitted_anomalies import ReadBackUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

PASSING = (RegistryUnavailableError, ReadBackUnavailable)
"""Errors that pass by themselves once the registry or the broker is back."""


class Patient:
    """Runs a step of a batch until it succeeds, waiting with backoff while its dependency is away."""

    def __init__(self, logger: logging.Logger = log,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._say = RateLimitedLog(logger)
        self._sleep = sleep

    async def run(self, what: str, step: Callable[[], T | Awaitable[T]]) -> T:
        """Call ``step`` (awaiting it if it returns an awaitable) until it does not raise a passing error."""
        attempt = 0
        while True:
            try:
                result = step()
                if inspect.isawaitable(result):
                    result = await result
            except PASSING as exc:
                attempt += 1
                wait = retry_wait(attempt)
                self._say.warning(what, "cannot %s (%s); the batch waits and is tried again (attempt %d, next in "
                                        "%.0f s)", what, exc, attempt, wait)
                await self._sleep(wait)
                continue
            if attempt:
                self._say.recovered(what, "%s works again after %d attempts", what, attempt)
            return result  # type: ignore[return-value]
