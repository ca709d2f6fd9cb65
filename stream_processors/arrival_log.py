"""Readings the worker did not score as new, told in a summary line: never one line per reading.

A meter whose clock ran ahead once, or a worker restarted on state from another run, leaves
every later reading of that meter late or stale; before this, nothing in the log said so (issue
13). The metrics count each kind; this log names how many in the last period and an example
meter, so an operator reading the log sees why a meter went quiet. The first line comes at once,
then at most one per :data:`SUMMARY_SECONDS` with what was held back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from foundation.kafka_logging import THROTTLE_SECONDS

SUMMARY_SECONDS = THROTTLE_SECONDS
"""One line per this period at most: the same minute every outage message of the services uses."""

Example = tuple[str, int] | None
"""(meter id, timestamp ms) of one reading of a kind, for the log line."""


def _when(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ArrivalSummary:
    """Counts late, stale, duplicate and dead-lettered readings and logs them in one line a period.

    Called from the worker's agent once per micro-batch (:meth:`note`, :meth:`note_rejected`) and
    from a timer (:meth:`flush_due`), so what was held back is told even when no batch follows.
    """

    def __init__(self, logger: logging.Logger, period: float = SUMMARY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.period = period
        self.clock = clock
        self._last_logged = float("-inf")
        self._late = self._stale = self._duplicates = 0
        self._late_example: Example = None
        self._stale_example: Example = None
        self._rejected: Counter[str] = Counter()
        self._rejected_example: dict[str, str] = {}

    def note(self, *, late: int, stale: int, duplicates: int, late_example: Example, stale_example: Example) -> None:
        """Add one micro-batch's counts (examples: the batch's first late and stale reading)."""
        self._late += late
        self._stale += stale
        self._duplicates += duplicates
        self._late_example = late_example or self._late_example
        self._stale_example = stale_example or self._stale_example
        self.flush_due()

    def note_rejected(self, kind: str, reason: str) -> None:
        """One reading or message sent to the dead-letter topic, with its kind and full reason."""
        self._rejected[kind] += 1
        self._rejected_example.setdefault(kind, reason[:300])
        self.flush_due()

    def flush_due(self) -> None:
        """Log what was counted if anything was and the last line is a period old."""
        if not (self._late or self._stale or self._duplicates or self._rejected):
            return
        now = self.clock()
        if now - self._last_logged < self.period:
            return
        self._last_logged = now
        # a few late readings are ordinary (head-ends resend); stale ones and dead letters mean data not scored
        level = logging.WARNING if self._stale or self._rejected else logging.INFO
        self.logger.log(level, "%s", self._line())
        self._late = self._stale = self._duplicates = 0
        self._late_example = self._stale_example = None
        self._rejected.clear()
        self._rejected_example.clear()

    def _line(self) -> str:
        parts = []
        if self._late:
            meter, ts = self._late_example or ("?", 0)
            parts.append(f"{self._late} late (older than their meter's newest reading; scored without moving its "
                         f"state; e.g. meter {meter} at {_when(ts)})")
        if self._stale:
            meter, ts = self._stale_example or ("?", 0)
            parts.append(f"{self._stale} stale (older than every timestamp their meter remembers; not scored; "
                         f"e.g. meter {meter} at {_when(ts)})")
        if self._duplicates:
            parts.append(f"{self._duplicates} duplicate (already scored; not scored again)")
        for kind, count in sorted(self._rejected.items()):
            parts.append(f"{count} sent to the dead-letter topic as {kind} (e.g. {self._rejected_example[kind]})")
        return "readings not scored as new since the last such line: " + "; ".join(parts)
