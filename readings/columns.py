"""Turn raw readings-topic messages into columns the detector works on in one go.

A readings message is either one ``MeterReading`` (an IoT meter) or a ``MeterReadingBatch``
(a head-end upload of a feeder's meters). Both become rows of one :class:`ReadingColumns`, so
the rest of the worker never cares which shape arrived. Each reading is validated on its own: a
bad reading inside a batch is rejected with its reason while the good ones around it go on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.serde import METER_READING, METER_READING_BATCH, SerdeError


@dataclass
class Rejection:
    """A message or reading the worker cannot score, and why."""

    reason: str
    raw_bytes: bytes | None = None
    raw_text: str | None = None
    source: str = ""


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

    def extend(self, readings: list[dict[str, Any]], source: str) -> list[Rejection]:
        """Add the valid ``readings``; return a rejection, with its reason, for each other one.

        Columns are taken with one comprehension each and checked with numpy: a head-end batch
        carries hundreds of readings and this runs for every message, so per-reading method calls
        would be the worker's largest cost. Only a batch with a bad reading is looked at one by one.
        """
        try:
            meters = [r["meter_id"] for r in readings]
            feeders = [r["feeder_id"] for r in readings]
            energy = np.array([r["energy_kwh"] for r in readings], dtype=np.float64)
            intervals = np.array([r["interval_seconds"] for r in readings], dtype=np.float64)
            ok = bool(all(meters) and all(feeders) and np.isfinite(energy).all() and (energy >= 0).all()
                      and (intervals > 0).all())
        except (KeyError, TypeError, ValueError):
            ok = False
        if ok:
            self.meter_ids += meters
            self.feeder_ids += feeders
            self.timestamps_ms += [int(r["timestamp"]) for r in readings]
            self.kwh += energy.tolist()
            self.interval_s += intervals.astype(np.int64).tolist()
            return []
        rejected = []
        for reading in readings:
            problem = reading_problem(reading)
            if problem is None:
                self.add(reading)
            else:
                rejected.append(Rejection(reason=problem, raw_text=json.dumps(reading, default=str), source=source))
        return rejected

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.asarray(self.timestamps_ms, dtype=np.int64),
            np.asarray(self.kwh, dtype=np.float64),
            np.asarray(self.interval_s, dtype=np.int64),
        )


def reading_problem(reading: dict[str, Any]) -> str | None:
    """Why a decoded reading cannot be scored, or None if it can."""
    if not reading.get("meter_id"):
        return "missing meter_id"
    if not reading.get("feeder_id"):
        return f"meter {reading['meter_id']}: missing feeder_id"
    energy = reading.get("energy_kwh")
    if energy is None or not math.isfinite(energy):
        return f"meter {reading['meter_id']}: energy_kwh is not a finite number ({energy!r})"
    if energy < 0:
        return f"meter {reading['meter_id']}: negative energy_kwh {energy}"
    if not reading.get("interval_seconds") or reading["interval_seconds"] <= 0:
        return f"meter {reading['meter_id']}: interval_seconds must be positive ({reading.get('interval_seconds')!r})"
    return None


def decode_into(columns: ReadingColumns, serde: Any, data: bytes, source: str) -> list[Rejection]:
    """Decode one readings message into ``columns``; returns what had to be rejected."""
    try:
        name, record = serde.decode(data, raw_timestamps=True)
    except SerdeError as exc:
        return [Rejection(reason=f"undecodable message: {exc}", raw_bytes=data, source=source)]
    if name == METER_READING:
        readings = [record]
    elif name == METER_READING_BATCH:
        readings = record["readings"]
    else:
        return [Rejection(reason=f"unexpected record type {name} on the readings topic", raw_bytes=data, source=source)]
    return columns.extend(readings, source)
