"""Where a reading falls in the fleet's week: the slots its meter's baselines are kept by.

Slots follow the fleet's local time (one time zone, daylight saving time included) and its
working days: Saturdays, Sundays and, when a country is configured, public holidays are
non-working days, so a school's holiday Monday is judged against its weekends, not its Mondays.

A reading's timestamp *ends* its interval; its slot is the one the interval started in, so the
reading of 00:00-01:00 belongs to hour 0 however late it is stamped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from foundation.fleet_clock import FleetClock
from foundation.timeutil import DAY_MS, HOUR_MS, utc_index

HOW_SLOTS = 168
"""Hour-of-week slots, Monday 00:00 = 0 (day-of-week for daily readings)."""
HOD_SLOTS = 48
"""Hour of day by day type: 0-23 working days, 24-47 weekends and public holidays."""
WEEK_MS = 7 * DAY_MS
_WEEK_OFFSET_MS = 3 * DAY_MS
"""1970-01-01 was a Thursday (day 3 when Monday is day 0)."""


@dataclass(frozen=True)
class Slots:
    """Per reading: its baseline slots and where it lies in the day and the week (local time)."""

    hour_of_week: np.ndarray
    """0..167 (0..6 for daily readings)."""
    hour_of_day: np.ndarray
    """0..47: the hour, plus 24 on non-working days (0 or 24 for daily readings)."""
    day_phase: np.ndarray
    """0..1 through the day."""
    week_phase: np.ndarray
    """0..1 through the week, from Monday 00:00."""

    def subset(self, mask: np.ndarray) -> Slots:
        return Slots(self.hour_of_week[mask], self.hour_of_day[mask], self.day_phase[mask], self.week_phase[mask])


@dataclass(frozen=True)
class FleetCalendar:
    """The fleet's clock: an IANA time zone and, optionally, a country whose public holidays are
    non-working days (codes of the ``holidays`` package, e.g. ``KE``, ``NL``)."""

    timezone: str = "UTC"
    country: str | None = None
    _offsets: dict[int, int] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_clock(cls, clock: FleetClock) -> FleetCalendar:
        """The calendar of the fleet's configured clock (``WATTSUP_FLEET_*``)."""
        return cls(clock.timezone, clock.country)

    @cached_property
    def _holiday_days(self) -> np.ndarray:
        """Local day numbers (days since 1970-01-01) of public holidays, 1990-2100."""
        if not self.country:
            return np.zeros(0, dtype=np.int64)
        import holidays

        days = holidays.country_holidays(self.country, years=range(1990, 2101))
        return np.sort(np.array([(d - dt.date(1970, 1, 1)).days for d in days], dtype=np.int64))

    def local_ms(self, utc_ms: np.ndarray) -> np.ndarray:
        """Local wall-clock time as epoch milliseconds (UTC plus the zone's offset at that instant)."""
        utc_ms = np.asarray(utc_ms, dtype=np.int64)
        if self.timezone == "UTC" or len(utc_ms) == 0:
            return utc_ms
        # Offsets change at most twice a year: convert each distinct hour of the batch once.
        hours, inverse = np.unique(utc_ms // HOUR_MS, return_inverse=True)
        missing = [h for h in hours.tolist() if h not in self._offsets]
        if missing:
            instants = utc_index(np.array(missing, dtype=np.int64) * HOUR_MS)
            local = instants.tz_convert(self.timezone).tz_localize(None).as_unit("ms").asi8
            self._offsets.update(zip(missing, (local - instants.asi8).tolist()))
        offsets = np.array([self._offsets[h] for h in hours.tolist()], dtype=np.int64)
        return utc_ms + offsets[inverse]

    def slots(self, ts_ms: np.ndarray, interval_s: np.ndarray) -> Slots:
        """Slots and phases of readings ending at ``ts_ms`` (UTC epoch ms) after ``interval_s`` seconds."""
        start = self.local_ms(np.asarray(ts_ms, dtype=np.int64) - np.asarray(interval_s, dtype=np.int64) * 1000)
        in_week = (start + _WEEK_OFFSET_MS) % WEEK_MS
        dow = in_week // DAY_MS
        hour = (in_week % DAY_MS) // HOUR_MS
        daily = interval_s >= 86_400
        how = np.where(daily, dow, dow * 24 + hour)
        non_working = dow >= 5
        if len(self._holiday_days):
            non_working |= np.isin(start // DAY_MS, self._holiday_days)
        hod = np.where(daily, 0, hour) + 24 * non_working
        return Slots(hour_of_week=how.astype(np.int64), hour_of_day=hod.astype(np.int64),
                     day_phase=(in_week % DAY_MS) / DAY_MS, week_phase=in_week / WEEK_MS)


UTC_CALENDAR = FleetCalendar()
"""Time zone UTC, no holidays: the default, and what the original detector used."""


def time_slots(ts_ms: np.ndarray, interval_s: np.ndarray) -> Slots:
    """Slots on the UTC calendar without holidays (see :class:`FleetCalendar` for the fleet's own)."""
    return UTC_CALENDAR.slots(ts_ms, interval_s)
