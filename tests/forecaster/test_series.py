"""Per-meter series: a regular grid on the meter's own interval, missing readings left missing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecaster.series import series_from_readings
from foundation.timeutil import HOUR_MS


def test_series_are_regular_grids_of_the_recent_history():
    base = pd.Timestamp("2026-03-02T01:00:00Z")
    frame = pd.DataFrame({
        "timestamp": [base + pd.Timedelta(hours=h) for h in (0, 1, 3, 4, 4)] + [base + pd.Timedelta(minutes=30)],
        "meter_id": ["A"] * 5 + ["A"],
        "feeder_id": ["F1", "F1", "F1", "F1", "F2", "F2"],
        "kwh": [1.0, 2.0, 4.0, 5.0, 5.5, 9.9],
        "interval_seconds": [3600] * 5 + [1800],
    })
    (s,) = series_from_readings(frame, history_seconds=4 * 3600)
    # 4 h of history back from 05:00: 02:00..05:00; 04:00 missing is NaN; the duplicate keeps the last
    # delivered value; the 01:30 reading is off the hourly grid (and outside the window anyway)
    assert s.interval_seconds == 3600 and s.feeder_id == "F2"
    assert list(pd.to_datetime(s.end_ms, unit="ms")) == list(pd.date_range("2026-03-02T02:00", periods=4, freq="h"))
    np.testing.assert_array_equal(s.kwh, [2.0, np.nan, 4.0, 5.5])
    np.testing.assert_array_equal(s.horizon_ms(3 * 3600), s.end_ms[-1] + HOUR_MS * np.arange(1, 4))
