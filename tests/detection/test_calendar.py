"""Slots: a reading belongs to the hour its interval started in, weekends apart."""

from __future__ import annotations

import numpy as np

from detection.calendar import time_slots
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
