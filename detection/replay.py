"""Replaying a readings frame in time order, in micro-batches, as the stream worker would see it.

The one replay behind training (:mod:`detection.training`), ``wattsup detect``
(:mod:`detection.offline`) and evaluation (:mod:`detection.evaluation`): readings sorted by
timestamp, cut into batches that never split one timestamp (a cut inside an interval would split
a feeder's peer group), each batch carrying its readings' forecasts and peer groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import pandas as pd

from detection.peers import peer_groups
from detection.readings import ReadingBatch
from foundation.timeutil import epoch_ms, infer_interval_seconds

CHUNK = 20_000
"""Readings per replayed batch: large enough that per-batch costs vanish, small enough for memory."""


class ForecastColumns(Protocol):
    """Forecasts joined to a frame's rows (NaN where none covers a reading), e.g. a forecaster hindcast."""

    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def with_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a fresh index, ``feeder_id`` (the meter itself when absent) and
    ``interval_seconds`` (inferred per meter when absent)."""
    frame = frame.reset_index(drop=True)
    if "feeder_id" not in frame:
        frame = frame.assign(feeder_id=frame["meter_id"])
    if "interval_seconds" not in frame:
        frame = frame.assign(interval_seconds=infer_interval_seconds(frame["timestamp"], frame["meter_id"]))
    return frame


def time_aligned_chunks(ts_sorted: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    """(start, end) slices of about ``chunk`` rows that never split one timestamp."""
    n = len(ts_sorted)
    bounds, start = [], 0
    while start < n:
        end = min(start + chunk, n)
        if end < n:
            end = int(np.searchsorted(ts_sorted, ts_sorted[end - 1], side="right"))
        bounds.append((start, end))
        start = end
    return bounds


class TimeOrderedReadings:
    """A frame (timestamp, meter_id, kwh[, feeder_id, interval_seconds]) in time order, with the
    ``forecasts`` (row-aligned with the frame) that covered its readings, if any."""

    def __init__(self, frame: pd.DataFrame, forecasts: ForecastColumns | None = None) -> None:
        self.frame = with_defaults(frame)
        stamps = epoch_ms(self.frame["timestamp"])
        self.order = np.argsort(stamps, kind="stable")  # int64: sorting tz-aware timestamps makes Python objects
        """Position in the frame of each replayed reading."""
        self.timestamps_ms = stamps[self.order]
        self.meter_ids = self.frame["meter_id"].astype(str).to_numpy()[self.order]
        self.feeder_ids = self.frame["feeder_id"].astype(str).to_numpy()[self.order]
        self.groups = peer_groups(self.frame)[self.order]
        self.kwh = self.frame["kwh"].to_numpy(dtype=float)[self.order]
        self.interval_s = self.frame["interval_seconds"].to_numpy(dtype=np.int64)[self.order]
        self.forecasts = forecasts

    def __len__(self) -> int:
        return len(self.order)

    def batches(self, chunk: int = CHUNK) -> Iterator[tuple[slice, ReadingBatch]]:
        """(positions in replay order, batch) in time order."""
        fc = self.forecasts
        for start, end in time_aligned_chunks(self.timestamps_ms, chunk):
            rows = self.order[start:end]
            yield slice(start, end), ReadingBatch(
                meter_ids=self.meter_ids[start:end].tolist(), feeder_ids=self.feeder_ids[start:end].tolist(),
                timestamps_ms=self.timestamps_ms[start:end], kwh=self.kwh[start:end],
                interval_s=self.interval_s[start:end],
                expected=None if fc is None else fc.expected[rows], lower=None if fc is None else fc.lower[rows],
                upper=None if fc is None else fc.upper[rows], peer_groups=self.groups[start:end],
            )

    def in_frame_order(self, values: np.ndarray) -> np.ndarray:
        """``values`` given in replay order, back in the frame's row order."""
        out = np.empty_like(values)
        out[self.order] = values
        return out
