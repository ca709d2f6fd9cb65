"""A micro-batch of readings-topic messages into columns, validated in one pass.

:func:`readings.columns.decode_into` decodes and validates one message at a time, which suits a
head-end batch of hundreds of readings; a micro-batch of single-reading messages would pay the
validation's numpy set-up once per reading. Here every message is decoded first and all their
readings are validated together; only a batch with a bad message or reading is taken again
message by message, so each rejection names the message it came from, exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from readings.columns import ReadingColumns, Rejection, decode_into
from schemas.serde import METER_READING, METER_READING_BATCH, SerdeError


def message_source(topic: str, partition: int, offset: int) -> str:
    """Where a message came from, as dead letters name it."""
    return f"topic:{topic}[{partition}]@{offset}"


def decode_messages(serde: Any, topic: str, messages: Sequence[tuple[bytes, int, int]],
                    now_ms: int) -> tuple[ReadingColumns, list[Rejection]]:
    """Columns of every valid reading of ``messages`` ((value, partition, offset) each, in order) and a
    rejection for each message or reading that cannot be scored.

    A schema registry that cannot be reached raises (``RegistryUnavailableError``), as in
    :func:`~readings.columns.decode_into`: nothing is half decoded, the caller tries the batch again.
    """
    readings: list[dict[str, Any]] = []
    clean = True
    for value, _partition, _offset in messages:
        try:
            name, record = serde.decode(value, raw_timestamps=True)
        except SerdeError:
            clean = False
            break
        if name == METER_READING:
            readings.append(record)
        elif name == METER_READING_BATCH:
            readings.extend(record["readings"])
        else:
            clean = False
            break
    if clean:
        columns = ReadingColumns()
        if not columns.extend(readings, "", now_ms):
            return columns, []
    # Something in the batch is bad: message by message, so every rejection says where it came from.
    columns, rejections = ReadingColumns(), []
    for value, partition, offset in messages:
        rejections += decode_into(columns, serde, value, message_source(topic, partition, offset), now_ms)
    return columns, rejections
