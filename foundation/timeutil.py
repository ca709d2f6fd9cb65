"""Time as every WattsUp stage handles it: UTC epoch milliseconds and metering intervals.

Kafka records, forecasts and the detector's state all count time in UTC epoch milliseconds
(int64), so frames are converted once, here, and compared as integers from then on.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
DEFAULT_INTERVAL_SECONDS = 900
"""A meter with a single reading shows no spacing; 15 minutes is the most common smart-meter interval."""

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def epoch_ms(timestamps: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """UTC epoch milliseconds (int64) of a timestamp column; naive values are taken as UTC."""
    if not pd.api.types.is_datetime64_any_dtype(timestamps):
        timestamps = pd.to_datetime(timestamps, utc=True, format="ISO8601")
    return pd.DatetimeIndex(timestamps).as_unit("ms").asi8


def datetime_ms(moment: datetime) -> int:
    """UTC epoch milliseconds of one moment; a naive one is taken as UTC."""
    return int((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp() * 1000)


def utc_index(timestamps_ms: np.ndarray) -> pd.DatetimeIndex:
    """Epoch milliseconds back to a UTC ``DatetimeIndex``."""
    return pd.DatetimeIndex(np.asarray(timestamps_ms, dtype=np.int64).astype("datetime64[ms]")).tz_localize("UTC")


def local_weekday(ms: np.ndarray, timezone: str = "UTC") -> np.ndarray:
    """Day of week (Monday = 0) of each UTC epoch-millisecond instant on the clocks of ``timezone``
    (an IANA name; daylight saving time included)."""
    ms = np.asarray(ms, dtype=np.int64)
    if timezone == "UTC":
        return (ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday
    return utc_index(ms).tz_convert(timezone).day_of_week.to_numpy()


def parse_interval(text: str) -> timedelta:
    """``5m``, ``15m``, ``1h``, ``1d`` (also ``30s``, ``15min``) -> timedelta; ValueError otherwise."""
    match = _INTERVAL.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an interval like 5m, 15m, 1h or 1d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError(f"{text!r} must be a positive whole number of seconds")
    return timedelta(seconds=seconds)


def infer_interval_seconds(timestamps: pd.Series, meter_ids: pd.Series) -> pd.Series:
    """Per-meter interval: the most common spacing of its readings (the smallest on a tie).

    The most common spacing rather than the median: gaps from missing or rejected rows leave it
    alone even when they are frequent, where a median would drift to twice the interval once
    half the readings are missing. :data:`DEFAULT_INTERVAL_SECONDS` if the meter has a single reading.
    """
    frame = pd.DataFrame({"t": epoch_ms(timestamps) // 1000, "m": meter_ids.to_numpy()})
    frame = frame.sort_values(["m", "t"])
    gaps = frame.groupby("m", sort=False)["t"].diff()
    positive = pd.DataFrame({"m": frame["m"], "gap": gaps})[gaps > 0]
    counts = positive.groupby(["m", "gap"]).size().rename("n").reset_index()
    counts = counts.sort_values(["m", "n", "gap"], ascending=[True, False, True])
    typical = counts.drop_duplicates("m").set_index("m")["gap"]
    return meter_ids.map(typical).fillna(DEFAULT_INTERVAL_SECONDS).astype("int64")
