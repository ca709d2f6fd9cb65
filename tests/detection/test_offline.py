"""Scoring a whole frame: answers independent of micro-batch cuts, a model fitted on the input if none."""

from __future__ import annotations

from datetime import timedelta

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
