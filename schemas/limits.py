"""Limits every entry point applies to what meters and clients send: identifiers and timestamps.

One definition, used by the CSV parser, the dashboard's HTTP ingest and upload, and the stream
worker's validation, so a reading refused at one door is refused at every door.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

MAX_ID_LENGTH = 128
"""Longest meter or feeder id, in characters. Real ids (serial numbers, MPANs, EIC codes, feeder
names) are under 40; 128 leaves room for prefixed or composite ids and matches the dashboard's
``String(128)`` columns. Without a cap one CSV line became a 20 MB meter id."""

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: a CR or LF in
an id starts a new row in a CSV export or a forged line in a log, and none is ever part of a real id."""

EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=timezone.utc)
"""No smart-meter reading predates this: older stamps are meters whose clock reset (1970, 1980)."""
EARLIEST_TIMESTAMP_MS = int(EARLIEST_TIMESTAMP.timestamp() * 1000)

FUTURE_TOLERANCE = timedelta(days=1)
"""How far past the wall clock a reading may be stamped. Meter clocks drift by minutes, head-ends
deliver batches stamped at the interval's end, and mis-set time zones put stamps hours ahead: a
day covers all of those; anything later is a wrong clock, and would otherwise make every correct
reading of that meter look late (and, before the dashboard fixed its pruning, deleted history)."""
FUTURE_TOLERANCE_MS = int(FUTURE_TOLERANCE.total_seconds() * 1000)


def identifier_problem(text: str) -> str | None:
    """Why ``text`` is not usable as a meter or feeder id, or None if it is."""
    if not isinstance(text, str):
        return f"must be text, not {type(text).__name__}"
    if not text.strip():
        return "must not be empty"
    if len(text) > MAX_ID_LENGTH:
        return f"is {len(text)} characters long; the limit is {MAX_ID_LENGTH}"
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        return f"contains the control character U+{ord(bad.group()):04X} at position {bad.start()}"
    return None


def identifiers_usable(ids: Sequence[str]) -> bool:
    """True if every id in ``ids`` passes :func:`identifier_problem`, checked in a few C-level passes.

    For the stream worker's hot path: it validates every reading of every message, and one
    Python call per id would be its largest cost. On False, call :func:`identifier_problem` per id
    for the reasons. A non-text id raises TypeError (the caller treats that as False).
    """
    if not ids:
        return True
    return (all(map(str.strip, ids)) and max(map(len, ids)) <= MAX_ID_LENGTH
            and _FORBIDDEN.search("".join(ids)) is None)


def timestamp_problem(timestamp_ms: int, now_ms: int, tolerance_ms: int = FUTURE_TOLERANCE_MS) -> str | None:
    """Why a reading stamped ``timestamp_ms`` (UTC ms) is outside the sane window at ``now_ms``, or None."""
    if timestamp_ms < EARLIEST_TIMESTAMP_MS:
        return f"is before {EARLIEST_TIMESTAMP.date().isoformat()} (a reset meter clock?)"
    if timestamp_ms > now_ms + tolerance_ms:
        hours = tolerance_ms / 3_600_000
        return f"is more than {hours:g} h ahead of the current time (a wrong meter clock?)"
    return None


CONTROL_CHARACTERS_PATTERN = _FORBIDDEN.pattern
"""The forbidden characters as a regular expression, for vectorised checks (pandas ``str.contains``)."""
