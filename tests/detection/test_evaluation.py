"""Evaluation metrics on a known answer; WattsUp against the baselines on a labelled fleet."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from detection.evaluation import (
    evaluate_flags,
    feature_detector_flags,
    raw_isolation_forest_baseline,
    rolling_zscore_baseline,
)
from detection.offline import detect_frame
from detection.training import fit_detector
from simulation.fleet import FleetConfig, simulate_fleet


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


def test_wattsup_beats_both_baselines_on_event_f1():
    train = simulate_fleet(FleetConfig(meters=100, days=10, interval=timedelta(hours=1), seed=1001)).readings
    trained = fit_detector(train, n_estimators=60)
    frame = simulate_fleet(FleetConfig(meters=200, days=14, interval=timedelta(hours=1), seed=202)).readings
    result = detect_frame(frame, trained)
    ours = evaluate_flags(frame, result.scores["flag"].to_numpy(), result.scores["score"].to_numpy(), "wattsup")
    z = evaluate_flags(frame, *rolling_zscore_baseline(frame), "z")
    raw = evaluate_flags(frame, *raw_isolation_forest_baseline(frame), "raw")
    assert ours.event_f1 > 2 * max(z.event_f1, raw.event_f1)
    assert ours.event_recall > 0.7 and ours.event_precision > 0.7


def test_feature_detectors_answer_in_the_frames_order_and_refuse_unknown_names():
    frame = simulate_fleet(FleetConfig(meters=20, days=4, interval=timedelta(hours=1), seed=5)).readings
    flag, score = feature_detector_flags(frame, "lof")
    assert len(flag) == len(score) == len(frame)
    assert 0 < flag.mean() < 0.1
    with pytest.raises(ValueError, match="unknown detector"):
        feature_detector_flags(frame, "kmeans")
