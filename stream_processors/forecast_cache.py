"""The latest forecast of each meter, joined to readings as they are scored.

Forecasts arrive on the compacted forecasts topic, keyed by meter, in the meter's feeder
partition. The worker keeps them in memory and, per feeder, in a changelog-backed table
(``F0001|forecasts``: each meter's Forecast record as received), so a worker that takes a
feeder over recovers its meters' forecasts with its state.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.serde import FORECAST, SerdeError

log = logging.getLogger(__name__)


@dataclass
class MeterForecast:
    """One meter's forecast horizon, on the meter's own interval grid."""

    start_ms: int
    step_ms: int
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    model_version: str

    def at(self, ts_ms: int) -> tuple[float, float, float] | None:
        """(expected, lower, upper) of the forecast point at ``ts_ms``, if the horizon has one."""
        offset = ts_ms - self.start_ms
        if offset < 0 or offset % self.step_ms:
            return None
        i = offset // self.step_ms
        if i >= len(self.expected):
            return None
        return float(self.expected[i]), float(self.lower[i]), float(self.upper[i])


def _table_key(feeder: str) -> bytes:
    return f"{feeder}|forecasts".encode()


class ForecastCache:
    """Forecasts by meter, backed per feeder by a table (any mutable mapping of bytes to bytes)."""

    def __init__(self, serde: Any) -> None:
        self.serde = serde
        self.table: Any = None
        self.by_meter: dict[str, MeterForecast] = {}
        self._records: dict[str, dict[str, bytes]] = {}
        """feeder -> meter -> the Forecast record as received."""

    def __len__(self) -> int:
        return len(self.by_meter)

    def accept(self, values: list[bytes]) -> None:
        """Keep the latest forecast per meter; persist each changed feeder's forecasts in the table."""
        changed: set[str] = set()
        for value in values:
            try:
                name, fc = self.serde.decode(value, raw_timestamps=True)
            except SerdeError as exc:
                log.warning("skipping undecodable forecast: %s", exc)
                continue
            if name != FORECAST or not fc["horizon"]:
                continue
            self._keep(fc, value)
            changed.add(fc["feeder_id"])
        if self.table is None:
            return
        for feeder in changed:
            self.load_feeder(feeder)  # a feeder taken over: its other meters' forecasts belong in the record
            payload = {m: blob.hex() for m, blob in self._records[feeder].items()}
            self.table[_table_key(feeder)] = json.dumps(payload).encode()

    def _keep(self, fc: dict[str, Any], value: bytes) -> None:
        horizon = fc["horizon"]
        self.by_meter[fc["meter_id"]] = MeterForecast(
            start_ms=int(horizon[0]["timestamp"]), step_ms=int(fc["interval_seconds"]) * 1000,
            expected=np.array([p["expected"] for p in horizon]), lower=np.array([p["lower"] for p in horizon]),
            upper=np.array([p["upper"] for p in horizon]), model_version=fc["model_version"],
        )
        self._records.setdefault(fc["feeder_id"], {})[fc["meter_id"]] = value

    def load_feeder(self, feeder: str) -> None:
        """Take a feeder's forecasts out of the table (recovered there after a start or a rebalance);
        newer ones in memory are kept."""
        if self.table is None:
            return
        blob = self.table.pop(_table_key(feeder), None)
        if blob is None:
            return
        for meter, hex_value in json.loads(blob).items():
            if meter not in self.by_meter:
                value = bytes.fromhex(hex_value)
                try:
                    _, fc = self.serde.decode(value, raw_timestamps=True)
                except SerdeError:
                    continue
                self._keep(fc, value)

    def feeders(self) -> list[str]:
        """Feeders with forecasts kept."""
        return list(self._records)

    def drop_feeders(self, feeders: list[str]) -> None:
        """Forget the feeders' forecasts (a partition this worker lost)."""
        for feeder in feeders:
            for meter in self._records.pop(feeder, {}):
                self.by_meter.pop(meter, None)

    def columns(self, meters: list[str], ts: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None,
                                                                   np.ndarray | None]:
        """(expected, lower, upper) per reading, NaN where no forecast covers it; all None without forecasts."""
        if not self.by_meter:
            return None, None, None
        n = len(meters)
        expected, lower, upper = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        forecasts = self.by_meter
        for i, meter in enumerate(meters):
            fc = forecasts.get(meter)
            if fc is not None:
                point = fc.at(int(ts[i]))
                if point is not None:
                    expected[i], lower[i], upper[i] = point
        return expected, lower, upper
