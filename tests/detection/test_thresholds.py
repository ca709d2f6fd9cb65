"""Thresholds: scaled by sensitivity and interval, gated by each meter's own score history."""

from __future__ import annotations

import numpy as np

from detection.features import FeatureExtractor
from detection.meter_state import Scalar
from detection.thresholds import Thresholds, gate_by_meter_history, per_reading_scale, severities
from tests.detection.hand_made import T0, batch


def test_thresholds_scale_with_sensitivity_and_the_interval_up_to_an_hour():
    scale = per_reading_scale(np.array([1.0, 2.0, 1.0, 1.0]), np.array([3600, 3600, 900, 86_400]))
    assert scale.tolist() == [1.0, 2.0, 0.25, 1.0]


def test_severity_follows_the_tail_probability():
    th = Thresholds()
    flag = np.array([True, True, True, False])
    tail = np.array([0.01, 0.0004, 0.00005, 0.00001])
    assert severities(flag, tail, np.ones(4), th).tolist() == ["INFO", "WARNING", "CRITICAL", ""]


def test_a_meter_with_a_history_must_stand_out_from_its_own_usual_score():
    th = Thresholds()
    ex = FeatureExtractor()
    n = 200  # hours: past the score history the gate needs (48 h + 48 readings)
    ts = T0 + 3_600_000 * np.arange(1, n + 1)
    fb = ex.transform(batch(["m"] * n, ts, np.full(n, 1.0), np.full(n, 3600)))
    rows = ex.store.rows_for(["m"] * n)
    use_model = np.ones(n, dtype=bool)
    score = np.full(n, 0.40)
    score[-1] = 0.42  # a reading barely above the meter's usual 0.40
    flag = np.zeros(n, dtype=bool)
    flag[-1] = True  # say the model flagged it
    gate_by_meter_history(ex.store, fb, rows, use_model, score, flag, np.ones(n), np.full(n, 3600), th)
    assert not flag[-1]
    # unflagged, so it was learnt: the usual score moved a little towards it
    assert 0.40 < ex.store.scalars[0, Scalar.SCORE_MEAN] < 0.41
    # a reading far above the usual score keeps its flag
    flag2 = np.ones(1, dtype=bool)
    fb2 = ex.transform(batch(["m"], [ts[-1] + 3_600_000], [1.0], [3600]))
    gate_by_meter_history(ex.store, fb2, rows[:1], np.ones(1, dtype=bool), np.array([0.8]), flag2, np.ones(1),
                          np.array([3600]), th)
    assert flag2[0]
