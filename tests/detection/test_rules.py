"""Rules: outages where usage is usual, stuck registers, spikes of meters too young for the model."""

from __future__ import annotations

import numpy as np

from detection.rules import rule_scores
from detection.thresholds import Thresholds
from tests.detection.hand_made import noisy_pattern, run


def flagged(series: list[float], spikes: bool = True) -> np.ndarray:
    _, fb = run(series)
    mask = np.ones(len(series), dtype=bool)
    score, tail = rule_scores(fb, mask, np.full(len(series), 3600), Thresholds(), spikes=spikes)
    return score >= 0.5


def test_an_outage_is_two_hours_of_zero_where_usage_is_usual():
    day = noisy_pattern(2)
    evening = day + noisy_pattern(1, seed=1)[:18] + [0.0, 0.0, 0.0]  # the evening peak hours read zero
    assert flagged(evening)[-2:].all() and not flagged(evening)[-3]
    assert not flagged(day).any()


def test_a_stuck_register_is_three_hours_of_the_same_non_zero_value():
    series = noisy_pattern(2) + [0.77] * 4
    hits = flagged(series)
    assert hits[-2:].all() and not hits[:-2].any()  # readings 3 and 4 of the run


def test_a_young_meters_spike_needs_a_day_of_history():
    early = noisy_pattern(1)[:10] + [5.0]
    later = noisy_pattern(1) + [5.0]
    assert not flagged(early).any()
    assert flagged(later)[-1]
    assert not flagged(later, spikes=False)[-1]
