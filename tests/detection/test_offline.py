"""Scoring a whole frame: answers independent of micro-batch cuts, a model fitted on the input if none."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from detection.engine import DetectionEngine
from detection.offline import ANOMALY_COLUMNS, anomalies_frame, detect_frame, score_frame
from detection.replay import TimeOrderedReadings
from detection.training import NotEnoughHistoryError, fit_detector
from simulation.fleet import FleetConfig, simulate_fleet


@pytest.fixture(scope="module")
def trained():
    train = simulate_fleet(FleetConfig(meters=60, days=8, interval=timedelta(hours=1), seed=1001)).readings
    return fit_detector(train, n_estimators=40)


def test_results_do_not_depend_on_how_readings_are_cut_into_micro_batches(trained, monkeypatch):
    """The stream's micro-batches and `wattsup detect`'s chunks must give the same answers."""
    readings = simulate_fleet(FleetConfig(meters=40, days=8, interval=timedelta(hours=1), seed=77)).readings
    large = score_frame(DetectionEngine(trained), readings)
    original = TimeOrderedReadings.batches
    monkeypatch.setattr(TimeOrderedReadings, "batches", lambda self, chunk=37: original(self, 37))
    small = score_frame(DetectionEngine(trained), readings)
    assert small.scores["flag"].sum() > 0
    pd.testing.assert_frame_equal(small.scores, large.scores)
    pd.testing.assert_frame_equal(small.anomalies.drop(columns=["causes_json"]),
                                  large.anomalies.drop(columns=["causes_json"]))


def test_scores_come_back_in_the_input_order(trained):
    readings = simulate_fleet(FleetConfig(meters=10, days=3, interval=timedelta(hours=1), seed=8)).readings
    shuffled = readings.sample(frac=1.0, random_state=1).reset_index(drop=True)
    result = score_frame(DetectionEngine(trained), shuffled)
    assert result.scores["meter_id"].tolist() == shuffled["meter_id"].tolist()
    assert (result.scores["timestamp"] == shuffled["timestamp"]).all()


def test_without_a_model_one_is_fitted_on_the_input_and_a_short_file_is_a_clear_error():
    readings = simulate_fleet(FleetConfig(meters=20, days=5, interval=timedelta(hours=1), seed=9)).readings
    result = detect_frame(readings)
    assert result.model_version and len(result.scores) == len(readings)
    with pytest.raises(NotEnoughHistoryError, match="at least 3 days of history"):
        detect_frame(readings.head(2))


def test_no_anomalies_still_give_the_documented_columns():
    assert list(anomalies_frame([]).columns) == ANOMALY_COLUMNS


def two_meters(days: int, seed: int = 3) -> pd.DataFrame:
    """Two hourly households for ``days`` days, about 0.65 kWh at hour 12 (a daily shape, 5% noise)."""
    rng = np.random.default_rng(seed)
    hours = days * 24
    ts = pd.date_range("2026-03-02T01:00:00Z", periods=hours, freq="h")
    shape = 0.45 + 0.2 * np.sin(2 * np.pi * (np.arange(hours) % 24 - 6) / 24)
    frames = [pd.DataFrame({"timestamp": ts, "meter_id": m, "kwh": np.round(shape * (1 + 0.05 * rng.standard_normal(hours)), 3),
                            "feeder_id": "F1", "interval_seconds": 3600}) for m in ("A", "B")]
    return pd.concat(frames, ignore_index=True).sort_values(["timestamp", "meter_id"], ignore_index=True)


def two_daily_meters(days: int, seed: int = 5) -> pd.DataFrame:
    """Two daily-read meters for ``days`` days, about 12 kWh a day with a weekly shape (5% noise)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2026-01-05T00:00:00Z", periods=days, freq="D")
    shape = 12.0 + 2.0 * (np.arange(days) % 7 >= 5)
    frames = [pd.DataFrame({"timestamp": ts, "meter_id": m, "kwh": np.round(shape * (1 + 0.05 * rng.standard_normal(days)), 2),
                            "feeder_id": "F1", "interval_seconds": 86400}) for m in ("A", "B")]
    return pd.concat(frames, ignore_index=True).sort_values(["timestamp", "meter_id"], ignore_index=True)


def test_one_unusual_day_of_a_daily_meter_is_no_level_shift_but_three_are():
    frame = two_daily_meters(70)
    day = pd.Timestamp("2026-02-18T00:00:00Z")
    one = (frame["meter_id"] == "A") & (frame["timestamp"] == day)
    frame.loc[one, "kwh"] *= 1.6  # a day of guests
    moved = (frame["meter_id"] == "B") & (frame["timestamp"] >= day)
    frame.loc[moved, "kwh"] *= 1.6  # new equipment: more usage for good
    a = detect_frame(frame).anomalies
    assert not (a[a["meter_id"] == "A"]["kind"] == "level_shift").any()
    shifts = a[(a["meter_id"] == "B") & (a["kind"] == "level_shift")]
    assert len(shifts) == 1
    assert day + pd.Timedelta(days=2) <= shifts["timestamp"].iloc[0] <= day + pd.Timedelta(days=6)


def test_one_spike_is_one_flag_that_grows_with_its_size_and_does_not_echo():
    frame = two_meters(30)
    at = frame.index[(frame["meter_id"] == "A") & (frame["timestamp"] == pd.Timestamp("2026-03-25T13:00:00Z"))][0]
    frame.loc[at, "kwh"] = 6.0  # about 9x the usual 0.65
    result = detect_frame(frame)
    flagged = result.scores[result.scores["flag"].astype(bool) & (frame["meter_id"] == "A")]
    assert flagged.index.tolist() == [at]  # the readings after it are not "dips" of an echoing window
    assert result.scores.loc[at, "severity"] in ("WARNING", "CRITICAL")
    spikes = result.anomalies[result.anomalies["meter_id"] == "A"]
    assert spikes["kind"].tolist() == ["spike"] and "9.6x the usual" in spikes["causes"].iloc[0]


def test_a_level_shift_is_reported_once_then_becomes_the_meters_normal():
    frame = two_meters(42)
    moved = (frame["meter_id"] == "A") & (frame["timestamp"] >= pd.Timestamp("2026-03-30T00:00:00Z"))
    frame.loc[moved, "kwh"] = (frame.loc[moved, "kwh"] * 2.0).round(3)  # new equipment: twice the usage for good
    result = detect_frame(frame)
    a = result.anomalies[result.anomalies["meter_id"] == "A"]
    assert (a["kind"] == "level_shift").sum() == 1
    shift_at = a.loc[a["kind"] == "level_shift", "timestamp"].iloc[0]
    assert shift_at < pd.Timestamp("2026-03-31T00:00:00Z")  # noticed within a day
    assert (a["timestamp"] > shift_at + pd.Timedelta(days=1)).sum() == 0  # then judged by its new normal
    assert len(result.anomalies[result.anomalies["meter_id"] == "B"]) == 0
