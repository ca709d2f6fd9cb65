"""Turn raw readings-topic messages into columns the detector works on in one go.

A readings message is either one ``MeterReading`` (an IoT meter) or a ``MeterReadingBatch``
(a head-end upload of a feeder's meters). Both become rows of one :class:`ReadingColumns`, so
the rest of the worker never cares which shape arrived. Each reading is validated on its own: a
bad reading inside a batch is rejected with its reason while the good ones around it go on.

What is refused is what every other door refuses (:mod:`schemas.limits`): unusable meter and
feeder ids, timestamps before 2000 or beyond the wall clock plus the tolerance (a wrong meter
clock: accepted, it would leave every later, correct reading of that meter "late"), and energy
that is not a finite number. Negative energy is a reading: net meters of solar prosumers read
below zero while they export.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.limits import (
    EARLIEST_TIMESTAMP_MS,
    FUTURE_TOLERANCE_MS,
    identifier_problem,
    identifiers_usable,
    timestamp_problem,
)
from schemas.serde import METER_READING, METER_READING_BATCH, SerdeError

UNDECODABLE = "undecodable"
"""Rejection kinds: short, fixed texts (the dead-letter metric's label; never a meter id)."""
UNEXPECTED_RECORD = "unexpected record type"
MISSING_ID = "missing id"
BAD_ID = "bad id"
BAD_ENERGY = "bad energy"
BAD_INTERVAL = "bad interval"
FUTURE_TIMESTAMP = "timestamp ahead of the clock"
PAST_TIMESTAMP = "timestamp before 2000"


def wall_clock_ms() -> int:
    """Now, in UTC milliseconds: what a reading's timestamp is checked against."""
    return int(time.time() * 1000)


@dataclass
class Rejection:
    """A message or reading the worker cannot score, and why."""

    reason: str
    raw_bytes: bytes | None = None
    raw_text: str | None = None
    source: str = ""
    kind: str = ""
    """What kind of problem (one of this module's constants): a fixed text, safe as a metric label."""


@dataclass
class ReadingColumns:
    """Readings of one micro-batch as parallel columns, in arrival order."""

    meter_ids: list[str] = field(default_factory=list)
    feeder_ids: list[str] = field(default_factory=list)
    timestamps_ms: list[int] = field(default_factory=list)
    kwh: list[float] = field(default_factory=list)
    interval_s: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.meter_ids)

    def add(self, reading: dict[str, Any]) -> None:
        self.meter_ids.append(reading["meter_id"])
        self.feeder_ids.append(reading["feeder_id"])
        self.timestamps_ms.append(int(reading["timestamp"]))
        self.kwh.append(float(reading["energy_kwh"]))
        self.interval_s.append(int(reading["interval_seconds"]))

    def extend(self, readings: list[dict[str, Any]], source: str, now_ms: int | None = None,
               tolerance_ms: int = FUTURE_TOLERANCE_MS) -> list[Rejection]:
        """Add the valid ``readings``; return a rejection, with its reason, for each other one.

        ``now_ms`` is the wall clock the timestamps are checked against (default: now), with
        ``tolerance_ms`` of slack for readings stamped ahead of it. Columns
        are taken with one comprehension each and checked with numpy and C-level passes: a
        head-end batch carries hundreds of readings and this runs for every message, so
        per-reading method calls would be the worker's largest cost. Only a batch with a bad
        reading is looked at one by one.
        """
        now_ms = wall_clock_ms() if now_ms is None else now_ms
        try:
            meters = [r["meter_id"] for r in readings]
            feeders = [r["feeder_id"] for r in readings]
            stamps = np.array([r["timestamp"] for r in readings], dtype=np.int64)
            energy = np.array([r["energy_kwh"] for r in readings], dtype=np.float64)
            intervals = np.array([r["interval_seconds"] for r in readings], dtype=np.float64)
            ok = bool(identifiers_usable(meters) and identifiers_usable(feeders) and np.isfinite(energy).all()
                      and (intervals > 0).all() and (stamps >= EARLIEST_TIMESTAMP_MS).all()
                      and (stamps <= now_ms + tolerance_ms).all())
        except (KeyError, TypeError, ValueError, OverflowError):
            ok = False
        if ok:
            self.meter_ids += meters
            self.feeder_ids += feeders
            self.timestamps_ms += stamps.tolist()
            self.kwh += energy.tolist()
            self.interval_s += intervals.astype(np.int64).tolist()
            return []
        rejected = []
        for reading in readings:
            found = reading_problem_kind(reading, now_ms, tolerance_ms)
            if found is None:
                self.add(reading)
            else:
                kind, problem = found
                rejected.append(Rejection(reason=problem, raw_text=json.dumps(reading, default=str), source=source,
                                          kind=kind))
        return rejected

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.asarray(self.timestamps_ms, dtype=np.int64),
            np.asarray(self.kwh, dtype=np.float64),
            np.asarray(self.interval_s, dtype=np.int64),
        )


def reading_problem(reading: dict[str, Any], now_ms: int | None = None) -> str | None:
    """Why a decoded reading cannot be scored at wall clock ``now_ms`` (default: now), or None if it can."""
    found = reading_problem_kind(reading, wall_clock_ms() if now_ms is None else now_ms)
    return None if found is None else found[1]


def reading_problem_kind(reading: dict[str, Any], now_ms: int,
                         tolerance_ms: int = FUTURE_TOLERANCE_MS) -> tuple[str, str] | None:
    """(kind, reason) of what is wrong with a decoded reading, or None if it can be scored."""
    meter = reading.get("meter_id")
    if not meter:
        return MISSING_ID, "missing meter_id"
    problem = identifier_problem(meter)
    if problem is not None:
        return BAD_ID, f"meter_id {str(meter)[:40]!r} {problem}"
    feeder = reading.get("feeder_id")
    if not feeder:
        return BAD_ID, f"meter {meter}: missing feeder_id"
    problem = identifier_problem(feeder)
    if problem is not None:
        return BAD_ID, f"meter {meter}: feeder_id {str(feeder)[:40]!r} {problem}"
    energy = reading.get("energy_kwh")
    if not isinstance(energy, (int, float)) or not math.isfinite(energy):
        return BAD_ENERGY, f"meter {meter}: energy_kwh is not a finite number ({energy!r})"
    interval = reading.get("interval_seconds")
    if not isinstance(interval, (int, float)) or interval <= 0:
        return BAD_INTERVAL, f"meter {meter}: interval_seconds must be positive ({interval!r})"
    stamp = reading.get("timestamp")
    if not isinstance(stamp, int):
        return PAST_TIMESTAMP, f"meter {meter}: timestamp is not a time in milliseconds ({stamp!r})"
    problem = timestamp_problem(stamp, now_ms, tolerance_ms)
    if problem is not None:
        return (PAST_TIMESTAMP if stamp < EARLIEST_TIMESTAMP_MS else FUTURE_TIMESTAMP,
                f"meter {meter}: timestamp {stamp} {problem}")
    return None


def decode_into(columns: ReadingColumns, serde: Any, data: bytes, source: str,
                now_ms: int | None = None, tolerance_ms: int = FUTURE_TOLERANCE_MS) -> list[Rejection]:
    """Decode one readings message into ``columns``; returns what had to be rejected.

    A schema registry that cannot be reached raises (``RegistryUnavailableError``): the message is
    fine and must be decoded again later, not dead-lettered.
    """
    try:
        name, record = serde.decode(data, raw_timestamps=True)
    except SerdeError as exc:
        return [Rejection(reason=f"undecodable message: {exc}", raw_bytes=data, source=source, kind=UNDECODABLE)]
    if name == METER_READING:
        readings = [record]
    elif name == METER_READING_BATCH:
        readings = record["readings"]
    else:
        return [Rejection(reason=f"unexpected record type {name} on the readings topic", raw_bytes=data,
                          source=source, kind=UNEXPECTED_RECORD)]
    return columns.extend(readings, source, now_ms, tolerance_ms)
