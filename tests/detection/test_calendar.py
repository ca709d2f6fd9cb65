"""Slots: a reading belongs to the hour its interval started in, weekends apart."""

from __future__ import annotations

import numpy as np
import pandas as pd

from detection.calendar import FleetCalendar, time_slots
from foundation.fleet_clock import FleetClock
from foundation.timeutil import DAY_MS, HOUR_MS
from tests.detection.hand_made import T0


def test_the_reading_ending_at_midnight_belongs_to_sunday_23h():
    slots = time_slots(np.array([T0, T0 + HOUR_MS]), np.array([3600, 3600]))  # Monday 00:00 and 01:00
    assert slots.hour_of_week.tolist() == [6 * 24 + 23, 0]
    assert slots.hour_of_day.tolist() == [23 + 24, 0]  # Sunday 23h is a weekend hour


def test_weekdays_and_weekends_have_their_own_hours_of_day():
    saturday_9h = T0 + 5 * DAY_MS + 10 * HOUR_MS
    friday_9h = T0 + 4 * DAY_MS + 10 * HOUR_MS
    slots = time_slots(np.array([friday_9h, saturday_9h]), np.array([3600, 3600]))
    assert slots.hour_of_week.tolist() == [4 * 24 + 9, 5 * 24 + 9]
    assert slots.hour_of_day.tolist() == [9, 24 + 9]


def test_daily_readings_use_the_day_of_week_and_phases_run_through_the_week():
    ts = T0 + DAY_MS * np.arange(1, 8)
    slots = time_slots(ts, np.full(7, 86_400))
    assert slots.hour_of_week.tolist() == list(range(7))
    assert slots.hour_of_day.tolist() == [0] * 5 + [24, 24]
    assert np.all(np.diff(slots.week_phase) > 0) and slots.day_phase.max() == 0.0
    picked = slots.subset(np.array([True] + [False] * 6))
    assert picked.hour_of_week.tolist() == [0]


def test_slots_follow_the_fleets_local_time_across_daylight_saving():
    amsterdam = FleetCalendar("Europe/Amsterdam")
    # Clocks go from CET (UTC+1) to CEST (UTC+2) on 2026-03-29: the reading of 06:00-07:00 UTC covers
    # 07:00-08:00 local on the Saturday before and 08:00-09:00 local on the Monday after.
    saturday = int(pd.Timestamp("2026-03-28T07:00:00Z").value // 1_000_000)
    monday = int(pd.Timestamp("2026-03-30T07:00:00Z").value // 1_000_000)
    slots = amsterdam.slots(np.array([saturday, monday]), np.array([3600, 3600]))
    assert slots.hour_of_day.tolist() == [24 + 7, 8]  # Saturday 07:00 CET (non-working), Monday 08:00 CEST
    assert slots.hour_of_week.tolist() == [5 * 24 + 7, 8]


def test_public_holidays_are_non_working_days_when_a_country_is_set():
    christmas = int(pd.Timestamp("2026-12-25T10:00:00Z").value // 1_000_000)  # a Friday
    interval = np.array([3600])
    assert FleetCalendar().slots(np.array([christmas]), interval).hour_of_day.tolist() == [9]
    assert FleetCalendar("UTC", "NL").slots(np.array([christmas]), interval).hour_of_day.tolist() == [24 + 9]
    # the hour of week stays Friday's: a holiday is judged as a non-working day, not as a Saturday
    assert FleetCalendar("UTC", "NL").slots(np.array([christmas]), interval).hour_of_week.tolist() == [4 * 24 + 9]


def test_the_calendar_comes_from_the_shared_fleet_clock(monkeypatch):
    monkeypatch.setenv("WATTSUP_FLEET_TIMEZONE", "Africa/Nairobi")
    monkeypatch.setenv("WATTSUP_FLEET_COUNTRY", "ke")
    assert FleetCalendar.from_clock(FleetClock()) == FleetCalendar("Africa/Nairobi", "KE")
