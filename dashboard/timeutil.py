"""ISO 8601 UTC strings at the API edge, integer milliseconds inside."""

from __future__ import annotations

from datetime import datetime, timezone


def iso(ms: int | None) -> str | None:
    """``2026-11-25T08:00:00Z`` (milliseconds only when there are some)."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + "Z"


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(round(moment.timestamp() * 1000))


def now_ms() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1000)


HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
