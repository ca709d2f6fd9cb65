"""Each meter's recent history as a regular series at its own interval, ready to fit.

Readings come from the readings topic (:func:`readings.history.read_readings`) or a CSV
(:func:`readings.csv_parser.parse_readings_csv`) as one long frame. A meter's series runs on its
own grid of interval-end timestamps (as readings carry them) back from its newest reading, with
NaN where a reading is missing, so the forecast horizon continues exactly that grid and the
stream worker finds a forecast point at each reading's timestamp.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from foundation.timeutil import DAY_MS, epoch_ms

log = logging.getLogger(__name__)


@dataclass
class MeterSeries:
    """One meter's history on its own interval grid."""

    meter_id: str
    feeder_id: str
    interval_seconds: int
    end_ms: np.ndarray
    """Interval-end timestamps (epoch ms, int64), regular, ascending."""
    kwh: np.ndarray
    """Energy per interval; NaN where no reading arrived."""

    @property
    def step_ms(self) -> int:
        return self.interval_seconds * 1000

    @property
    def observed(self) -> int:
        return int(np.isfinite(self.kwh).sum())

    @property
    def span_days(self) -> float:
        return (len(self.end_ms) * self.step_ms) / DAY_MS if len(self.end_ms) else 0.0

    def horizon_ms(self, horizon_seconds: float) -> np.ndarray:
        """Timestamps of the next intervals after the newest reading, on the meter's own grid."""
        steps = max(1, int(horizon_seconds * 1000 // self.step_ms))
        return self.end_ms[-1] + self.step_ms * np.arange(1, steps + 1, dtype=np.int64)


def series_from_readings(frame: pd.DataFrame, history_seconds: float, meters: Iterable[str] | None = None) -> list[MeterSeries]:
    """Split a long readings frame into per-meter series covering the last ``history_seconds``.

    Columns: timestamp (UTC), meter_id, kwh, and optionally feeder_id and interval_seconds (a
    meter's interval is its most frequent one; its feeder the one of its newest reading). A
    duplicated timestamp keeps the reading delivered last; a reading off the meter's grid (its
    interval changed) is dropped and counted in the log.
    """
    if frame.empty:
        return []
    wanted = set(meters) if meters else None
    data = pd.DataFrame({
        "ts": epoch_ms(frame["timestamp"]),
        "meter_id": frame["meter_id"].astype(str).to_numpy(),
        "feeder_id": (frame["feeder_id"].astype(str).to_numpy() if "feeder_id" in frame else frame["meter_id"].astype(str).to_numpy()),
        "kwh": pd.to_numeric(frame["kwh"], errors="coerce").to_numpy(dtype=float),
        "interval": (frame["interval_seconds"].to_numpy(dtype=np.int64) if "interval_seconds" in frame
                     else np.full(len(frame), 900, dtype=np.int64)),
    })
    if wanted is not None:
        data = data[data["meter_id"].isin(wanted)]
    data = data.drop_duplicates(["meter_id", "ts"], keep="last").sort_values(["meter_id", "ts"], kind="stable")
    history_ms = int(history_seconds * 1000)
    out: list[MeterSeries] = []
    off_grid = 0
    for meter, group in data.groupby("meter_id", sort=True):
        ts = group["ts"].to_numpy()
        kwh = group["kwh"].to_numpy()
        intervals = group["interval"].to_numpy()
        values, counts = np.unique(intervals, return_counts=True)
        interval = int(values[np.argmax(counts)])
        step = interval * 1000
        last = int(ts[-1])
        first = max(int(ts[0]), last - history_ms + step)
        keep = (ts >= first) & ((last - ts) % step == 0)
        off_grid += int(((ts >= first) & ~keep).sum())
        ts, kwh = ts[keep], kwh[keep]
        first = int(ts[0])
        n = (last - first) // step + 1
        grid = first + step * np.arange(n, dtype=np.int64)
        values_on_grid = np.full(n, np.nan)
        values_on_grid[(ts - first) // step] = kwh
        out.append(MeterSeries(str(meter), str(group["feeder_id"].iloc[-1]), interval, grid, values_on_grid))
    if off_grid:
        log.warning("dropped %d readings that are off their meter's interval grid", off_grid)
    return out
