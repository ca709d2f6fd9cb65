"""Replay readings on a simulated clock: at recorded speed, scaled, or as fast as possible."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pandas as pd


def paced_chunks(frame: pd.DataFrame, speedup: float | None, *, time_column: str = "timestamp") -> Iterator[pd.DataFrame]:
    """Yield consecutive chunks of ``frame`` (already in delivery order) when they are due.

    With ``speedup=None`` everything is due at once. Otherwise the first row's time is "now"
    and each later row is due after (its time - first time) / speedup wall-clock seconds, so
    900 plays one 15-minute interval per second. Rows are grouped by equal timestamps: one
    interval of a fleet goes out together, as a head-end would send it.
    """
    if frame.empty:
        return
    if speedup is None:
        yield frame
        return
    times = frame[time_column].dt.as_unit("ms").astype("int64").to_numpy()
    first = times[0]
    wall_start = time.monotonic()
    start = 0
    n = len(frame)
    while start < n:
        end = start
        while end < n and times[end] == times[start]:
            end += 1
        due = wall_start + (times[start] - first) / 1000.0 / speedup
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield frame.iloc[start:end]
        start = end
