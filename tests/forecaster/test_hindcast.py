"""Replayed forecasts for training: made only from the past, covering the history after the first day."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pandas as pd

from forecaster.fitting import FitOptions
from forecaster.hindcast import HindcastPlan, hindcast_readings
from forecaster.runner import FitPool
from simulation.fleet import FleetConfig, simulate_fleet


def _hindcast(frame: pd.DataFrame):
    pool = FitPool(1)
    try:
        return hindcast_readings(frame, FitOptions(), pool, HindcastPlan(every_seconds=86400), threading.Event())
    finally:
        pool.close()


def test_every_reading_after_the_first_day_gets_a_forecast_made_before_it():
    frame = simulate_fleet(FleetConfig(meters=3, days=6, interval=timedelta(hours=1), seed=7)).readings
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # columns follow the frame's rows
    columns = _hindcast(frame)
    age = frame["timestamp"] - frame.groupby("meter_id")["timestamp"].transform("min")
    later = (age > pd.Timedelta(days=1)).to_numpy()
    assert np.isfinite(columns.expected[later]).all()
    assert np.isnan(columns.expected[~later]).all()
    assert (columns.lower[later] <= columns.expected[later]).all() and (columns.expected[later] <= columns.upper[later]).all()
    assert columns.runs == 3 * 5 and 0 < columns.fallbacks < columns.runs  # days 1-2: seasonal naive; then Prophet


def test_a_forecast_never_sees_the_readings_it_covers():
    frame = simulate_fleet(FleetConfig(meters=1, days=5, interval=timedelta(hours=1), seed=8)).readings
    frame = frame.sort_values("timestamp").reset_index(drop=True)
    changed = frame.copy()
    day4 = changed["timestamp"] >= changed["timestamp"].min() + pd.Timedelta(days=4)
    changed.loc[day4, "kwh"] *= 5  # the last day changes; forecasts covering days 1-4 must not
    before, after = _hindcast(frame), _hindcast(changed)
    up_to_day4 = (~day4).to_numpy()
    np.testing.assert_array_equal(before.expected[up_to_day4], after.expected[up_to_day4])
    # the run at the start of day 4 saw nothing of day 4 either: its forecast is unchanged too
    first_of_day4 = int(np.flatnonzero(day4.to_numpy())[0])
    assert before.expected[first_of_day4] == after.expected[first_of_day4]
