"""Where a reading falls in the week: the slots its meter's baselines are kept by.

A reading's timestamp *ends* its interval; its slot is the one the interval started in, so the
reading of 00:00-01:00 belongs to hour 0 however late it is stamped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foundation.timeutil import DAY_MS, HOUR_MS

HOW_SLOTS = 168
"""Hour-of-week slots, Monday 00:00 = 0 (day-of-week for daily readings)."""
HOD_SLOTS = 48
"""Hour of day by day type: 0-23 weekdays (Monday-Friday), 24-47 weekends."""
WEEK_MS = 7 * DAY_MS
_WEEK_OFFSET_MS = 3 * DAY_MS
"""1970-01-01 was a Thursday (day 3 when Monday is day 0)."""


@dataclass(frozen=True)
class Slots:
    """Per reading: its baseline slots and where it lies in the day and the week."""

    hour_of_week: np.ndarray
    """0..167 (0..6 for daily readings)."""
    hour_of_day: np.ndarray
    """0..47: the hour, plus 24 on weekends (0 or 24 for daily readings)."""
    day_phase: np.ndarray
    """0..1 through the day."""
    week_phase: np.ndarray
    """0..1 through the week, from Monday 00:00."""

    def subset(self, mask: np.ndarray) -> Slots:
        return Slots(self.hour_of_week[mask], self.hour_of_day[mask], self.day_phase[mask], self.week_phase[mask])


def time_slots(ts_ms: np.ndarray, interval_s: np.ndarray) -> Slots:
    """Slots and phases of readings ending at ``ts_ms`` (UTC epoch ms) after ``interval_s`` seconds."""
    start = ts_ms - interval_s * 1000
    in_week = (start + _WEEK_OFFSET_MS) % WEEK_MS
    dow = in_week // DAY_MS
    hour = (in_week % DAY_MS) // HOUR_MS
    daily = interval_s >= 86_400
    how = np.where(daily, dow, dow * 24 + hour)
    weekend = dow >= 5
    hod = np.where(daily, 0, hour) + 24 * weekend
    return Slots(hour_of_week=how.astype(np.int64), hour_of_day=hod.astype(np.int64),
                 day_phase=(in_week % DAY_MS) / DAY_MS, week_phase=in_week / WEEK_MS)
