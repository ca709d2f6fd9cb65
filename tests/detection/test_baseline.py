"""The slot baseline: hour of day first, hour of week as it fills, clipped updates."""

from __future__ import annotations

import numpy as np
import pytest

from detection.baseline import (
    CLIP_SPREADS,
    COUNT,
    FLEET_TAIL_MIN_READINGS,
    MEAN,
    FleetTails,
    slot_baseline,
    update_slots,
)
from detection.calendar import time_slots
from detection.meter_state import MeterStateStore
from foundation.timeutil import DAY_MS, HOUR_MS
from tests.detection.hand_made import T0, daily_pattern, run


def test_a_slot_update_is_clipped_to_a_few_spreads_and_the_first_one_capped():
    stats = np.zeros((1, 2, 3), dtype=np.float32)
    rows, slots = np.array([0]), np.array([1])
    one_hour = np.array([1.0])
    update_slots(stats, rows, slots, np.array([100.0]), 0.1, np.array([1.0]), np.array([5.0]), one_hour)
    assert stats[0, 1, MEAN] == 5.0 and stats[0, 1, COUNT] == 1  # the first observation is capped
    update_slots(stats, rows, slots, np.array([1000.0]), 0.1, np.array([1.0]), np.array([np.inf]), one_hour)
    assert stats[0, 1, MEAN] == np.float32(5.0 + 0.5 * CLIP_SPREADS)  # alpha 1/2 of a 4-spread step


def test_a_quarter_hour_reading_counts_a_quarter_of_an_hour():
    hourly = np.zeros((1, 1, 3), dtype=np.float32)
    quarter = np.zeros((1, 1, 3), dtype=np.float32)
    rows, slots = np.array([0]), np.array([0])
    for value in (1.0, 2.0):
        update_slots(hourly, rows, slots, np.array([value]), 0.1, np.array([1.0]), np.array([np.inf]), np.array([1.0]))
    for value in (1.0,) * 4 + (2.0,) * 4:
        update_slots(quarter, rows, slots, np.array([value]), 0.1, np.array([1.0]), np.array([np.inf]),
                     np.array([0.25]))
    assert quarter[0, 0, COUNT] == hourly[0, 0, COUNT] == 2  # two hours of observation either way
    # four quarters of an unusual hour move the slot about as far as one unusual hourly reading
    assert quarter[0, 0, MEAN] == pytest.approx(hourly[0, 0, MEAN], rel=0.1)


def test_the_week_slot_takes_over_as_it_fills():
    tuesday = daily_pattern(1)
    tuesday[10] = 0.8  # Tuesday 10-11 h used twice Monday's
    ex, _ = run(daily_pattern(1) + tuesday)
    store: MeterStateStore = ex.store
    rows = store.rows_for(["m"])
    # the next Monday 10:00-11:00 has never been seen as an hour of week: the hour of day stands in
    monday_next_week = np.array([T0 + 7 * DAY_MS + 11 * HOUR_MS])
    slots = time_slots(monday_next_week, np.array([3600]))
    fresh = slot_baseline(store, rows, slots, np.array([0.6]), np.array([0.1]), np.array([0.6]), np.array([0.0]))
    assert fresh.week_slot_count[0] == 1  # Monday 10h was seen once, on the first day
    monday_10h = store.how[0, slots.hour_of_week[0]]
    day_10h = store.hod[0, slots.hour_of_day[0]]
    assert monday_10h[MEAN] != day_10h[MEAN]
    assert fresh.usual[0] == pytest.approx(monday_10h[MEAN] / 3 + day_10h[MEAN] * 2 / 3)
    assert fresh.spread[0] >= 0.1 * fresh.usual[0]


def test_fleet_tails_keep_what_an_hour_draws_beyond_every_hour():
    rng = np.random.default_rng(0)
    n = FLEET_TAIL_MIN_READINGS * 5
    hours = np.repeat(np.arange(24), n)
    excess = rng.normal(0.0, 0.5, 24 * n)  # ordinary ups and downs at every hour
    midnight = hours == 0
    cars = midnight & (rng.random(24 * n) < 0.04)  # one reading in 25 at midnight is a car on the charger
    excess[cars] = 15.0
    tails = FleetTails.from_readings(hours, excess)
    assert tails.upper[0] > 10.0  # the car, beyond what every hour shows
    assert (tails.upper[1:] < 0.5).all()  # ordinary variation is left to each meter's own spreads
    assert FleetTails.from_record(tails.as_record()).upper == pytest.approx(tails.upper, abs=1e-4)


def test_fleet_tails_of_too_few_readings_are_unknown():
    tails = FleetTails.from_readings(np.zeros(10, dtype=int), np.full(10, 20.0))
    assert (tails.upper == 0).all()
    assert (FleetTails.from_record({}).upper == 0).all()  # a model trained before tails were learnt
