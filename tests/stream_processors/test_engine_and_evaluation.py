"""The engine flags and explains injected anomalies; evaluation metrics on known answers."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from models.training import fit_detector
from producers.simulator import FleetConfig, simulate_fleet
from stream_processors.batch_detect import detect_frame
from stream_processors.engine import BASELINE_RULES, DetectionEngine
from stream_processors.evaluation import evaluate_flags, raw_isolation_forest_baseline, rolling_zscore_baseline


@pytest.fixture(scope="module")
def trained():
    train = simulate_fleet(FleetConfig(meters=100, days=10, interval=timedelta(hours=1), seed=1001)).readings
    return fit_detector(train, n_estimators=60)


@pytest.fixture(scope="module")
def labelled():
    return simulate_fleet(FleetConfig(meters=200, days=14, interval=timedelta(hours=1), seed=202))


def test_event_metrics_on_a_hand_made_case():
    ts = pd.date_range("2026-01-01", periods=10, freq="h", tz="UTC")
    frame = pd.DataFrame({"timestamp": ts, "meter_id": "m", "label": [0, 1, 1, 0, 0, 0, 0, 1, 0, 0]})
    flag = np.array([0, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=bool)  # hits event 1 late, one false alarm, misses event 2
    r = evaluate_flags(frame, flag, flag.astype(float), "hand")
    assert (r.events, r.alarm_episodes) == (2, 2)
    assert r.event_recall == 0.5 and r.event_precision == 0.5
    assert r.point_precision == 0.5 and r.point_recall == pytest.approx(1 / 3)
    assert r.median_delay_hours == 1.0
    assert r.false_alarms_per_1000 == 100.0


def test_wattsup_beats_both_baselines_on_event_f1(trained, labelled):
    frame = labelled.readings
    result = detect_frame(frame, trained)
    ours = evaluate_flags(frame, result.scores["flag"].to_numpy(), result.scores["score"].to_numpy(), "wattsup")
    z = evaluate_flags(frame, *rolling_zscore_baseline(frame), "z")
    raw = evaluate_flags(frame, *raw_isolation_forest_baseline(frame), "raw")
    assert ours.event_f1 > 2 * max(z.event_f1, raw.event_f1)
    assert ours.event_recall > 0.7 and ours.event_precision > 0.7


def test_anomalies_carry_causes_severity_and_version(trained, labelled):
    result = detect_frame(labelled.readings, trained)
    a = result.anomalies
    assert len(a) > 20
    assert a["causes"].str.len().gt(0).all()
    assert set(a["severity"]) <= {"INFO", "WARNING", "CRITICAL"}
    assert set(a["model_version"]) <= {trained.version, BASELINE_RULES}
    outages = a[a["kind"] == "outage"]
    assert outages["causes"].str.contains("no consumption").any()
    assert a["causes"].str.contains(r"usage \d+\.\dx the usual for (Monday|Tuesday|Wednesday|Thursday|Friday|"
                                    r"Saturday|Sunday) \d\d:00").any()


def test_one_model_call_per_batch(trained, labelled, monkeypatch):
    calls = []
    original = trained.detector.anomaly_score
    monkeypatch.setattr(trained.detector, "anomaly_score", lambda X: calls.append(len(X)) or original(X))
    engine = DetectionEngine(trained)
    frame = labelled.readings.sort_values("timestamp").iloc[:20_000]
    ts = frame["timestamp"].dt.as_unit("ms").astype("int64").to_numpy()
    engine.score(frame["meter_id"].tolist(), frame["feeder_id"].tolist(), ts, frame["kwh"].to_numpy(),
                 frame["interval_seconds"].to_numpy())
    assert len(calls) == 1 and calls[0] > 1000


def test_sensitivity_changes_how_much_is_flagged(trained, labelled):
    frame = labelled.readings
    low = detect_frame(frame, trained, sensitivity=0.5).scores["flag"].sum()
    mid = detect_frame(frame, trained, sensitivity=1.0).scores["flag"].sum()
    high = detect_frame(frame, trained, sensitivity=3.0).scores["flag"].sum()
    assert low < mid < high


def test_cold_start_meters_are_scored_by_baseline_rules(trained):
    engine = DetectionEngine(trained)
    ts = 1_772_409_600_000 + 3_600_000 * np.arange(1, 13)
    kwh = np.r_[np.full(4, 0.5), np.full(8, 0.77)]  # a new meter that gets stuck
    res = engine.score(["new"] * 12, ["F"] * 12, ts, kwh, np.full(12, 3600))
    assert set(res.model_version) == {BASELINE_RULES}
    flagged = res.anomalies
    assert flagged and all(a["model_version"] == BASELINE_RULES for a in flagged)
    assert "unchanged" in flagged[0]["causes"][0]["text"]


def test_results_do_not_depend_on_how_readings_are_cut_into_micro_batches(trained):
    """The stream's micro-batches and `wattsup detect`'s chunks must give the same answers."""
    from stream_processors.batch_detect import run_engine

    readings = simulate_fleet(FleetConfig(meters=40, days=8, interval=timedelta(hours=1), seed=77)).readings
    small = run_engine(DetectionEngine(trained), readings, chunk=37)
    large = run_engine(DetectionEngine(trained), readings, chunk=50_000)
    assert small.scores["flag"].sum() > 0
    pd.testing.assert_frame_equal(small.scores, large.scores)
    pd.testing.assert_frame_equal(small.anomalies.drop(columns=["causes_json"]),
                                  large.anomalies.drop(columns=["causes_json"]))
