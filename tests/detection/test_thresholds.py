"""Thresholds: scaled by sensitivity and interval, flags judged against each meter's own scores and
only for material readings."""

from __future__ import annotations

import numpy as np
import pytest

from detection.features import FeatureExtractor
from detection.meter_state import Scalar
from detection.thresholds import ScorePrior, Thresholds, flag_by_meter, materiality, materiality_needed, \
    meter_z_threshold, per_reading_scale, severities
from tests.detection.hand_made import T0, batch, noisy_pattern, run


def test_thresholds_scale_with_sensitivity_and_the_interval_up_to_an_hour():
    scale = per_reading_scale(np.array([1.0, 2.0, 1.0, 1.0]), np.array([3600, 3600, 900, 86_400]))
    assert scale.tolist() == [1.0, 2.0, 0.25, 1.0]


def test_severity_is_the_highest_of_tail_size_and_rule_strength():
    th = Thresholds()
    flag = np.array([True, True, True, True, True, False])
    tail = np.array([0.01, 0.0004, 0.00005, 0.01, 0.01, 0.00001])
    deviation = np.array([3.0, 3.0, 3.0, 12.0, 3.0, 30.0])
    rule = np.array([0.0, 0.0, 0.0, 0.0, 4.5, 9.0])
    got = severities(flag, tail, deviation, rule, np.ones(6), th).tolist()
    assert got == ["INFO", "WARNING", "CRITICAL", "WARNING", "CRITICAL", ""]


def test_an_ordinary_reading_is_not_material_and_a_far_one_is():
    ex, _ = run(noisy_pattern(21))
    hours = len(noisy_pattern(21))
    usual = noisy_pattern(22)[hours]
    _, fb = run([usual, usual * 6], start=T0 + 3_600_000 * hours, extractor=ex)
    m = materiality(fb)
    assert m[0] < 1.0 <= m[1]


def test_a_meter_with_a_history_must_stand_out_from_its_own_usual_score():
    th = Thresholds()
    prior = ScorePrior(center=0.40, spread=0.05)
    ex = FeatureExtractor()
    n = 200  # hours: past the 48 readings the population prior keeps its weight for
    ts = T0 + 3_600_000 * np.arange(1, n + 1)
    kwh = np.full(n, 1.0)
    kwh[-1] = 9.0  # material: far off its baseline
    fb = ex.transform(batch(["m"] * n, ts, kwh, np.full(n, 3600)))
    rows = ex.store.rows_for(["m"] * n)
    score = np.full(n, 0.30)  # this meter usually scores well below the population
    score[-1] = 0.33  # barely above its own usual score
    flag = flag_by_meter(ex.store, fb, rows, np.ones(n, dtype=bool), score, np.ones(n), th, prior)
    assert not flag[-1]
    # learnt reading by reading: the usual score is the meter's own, not the population's
    assert 0.30 <= ex.store.scalars[0, Scalar.SCORE_MEAN] < 0.31
    # a score far above the meter's usual, on a material reading, is flagged
    fb2 = ex.transform(batch(["m"], [ts[-1] + 3_600_000], [30.0], [3600]))
    flag2 = flag_by_meter(ex.store, fb2, rows[:1], np.ones(1, dtype=bool), np.array([0.8]), np.ones(1), th, prior)
    assert flag2[0]


def test_a_high_score_on_an_ordinary_reading_is_no_alarm():
    th = Thresholds()
    ex, _ = run(noisy_pattern(14))
    hours = len(noisy_pattern(14))
    _, fb = run([noisy_pattern(15)[hours]], start=T0 + 3_600_000 * hours, extractor=ex)
    rows = ex.store.rows_for(["m"])
    flag = flag_by_meter(ex.store, fb, rows, np.ones(1, dtype=bool), np.array([0.95]), np.ones(1), th, ScorePrior())
    assert not flag[0]


def test_sensitivity_moves_the_material_size_as_it_moves_the_score_threshold():
    th = Thresholds()
    needed = materiality_needed(np.array([0.5, 1.0, 2.0]), th)
    assert needed[1] == pytest.approx(1.0)
    assert needed[0] > 1.0 > needed[2]
    # as the score threshold: the normal quantile of twice the INFO probability, over that of once
    assert needed[2] == pytest.approx(meter_z_threshold(np.array([2.0]), th)[0] / meter_z_threshold(np.ones(1), th)[0])
