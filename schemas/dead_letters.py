"""The dead-letter record every service writes when it has to reject something.

Nothing valid is lost and nothing invalid vanishes: a rejected CSV row, JSON body or Kafka
message is kept verbatim with where it came from and why it was refused.
"""

from __future__ import annotations

import time
from typing import Any


def dead_letter_record(
    source: str,
    reason: str,
    *,
    raw_bytes: bytes | None = None,
    raw_text: str | None = None,
    row_number: int | None = None,
    first_seen_ms: int | None = None,
) -> dict[str, Any]:
    """A ``DeadLetter`` record (see ``schemas/avro/dead_letter.avsc``)."""
    return {
        "source": source,
        "raw_bytes": raw_bytes,
        "raw_text": raw_text,
        "reason": reason,
        "row_number": row_number,
        "first_seen": first_seen_ms if first_seen_ms is not None else int(time.time() * 1000),
    }
