"""Explanations: contributions that add up, kinds read from the state, sentences an operator reads."""

from __future__ import annotations

import numpy as np

from detection.explain import DEFAULT_SCALE, contributions, explain_rows, forecast_sentence, rule_cause, slot_name
from detection.features import FEATURE_NAMES
from foundation.timeutil import HOUR_MS
from tests.detection.hand_made import T0, noisy_pattern, run


def explain_last(series: list[float]) -> tuple[str, list]:
    _, fb = run(series)
    i = np.array([len(series) - 1])
    ((kind, causes),) = explain_rows(fb, i, np.asarray(series, dtype=float), np.full(len(series), 3600),
                                     np.zeros(len(FEATURE_NAMES)), DEFAULT_SCALE)
    return kind, causes


def test_contributions_sum_to_one_and_a_missing_forecast_counts_for_nothing():
    matrix = np.array([[3.0] + [0.0] * (len(FEATURE_NAMES) - 2) + [np.nan]])
    shares = contributions(matrix, np.zeros(len(FEATURE_NAMES)), np.ones(len(FEATURE_NAMES)))
    assert shares.sum() == 1.0 and shares[0, 0] == 1.0 and shares[0, -1] == 0.0


def test_a_spike_says_its_ratio_and_slot():
    kind, causes = explain_last(noisy_pattern(4) + [8.0])
    assert kind in ("spike", "high_load")
    assert causes[0].text.startswith("usage ") and "x the usual for Friday 00:00" in causes[0].text


def test_an_outage_and_a_stuck_register_say_so():
    kind, causes = explain_last(noisy_pattern(3) + noisy_pattern(1, seed=2)[:18] + [0.0] * 4)
    assert kind == "outage" and any("no consumption" in c.text for c in causes)
    kind, causes = explain_last(noisy_pattern(3) + [0.77] * 6)
    assert kind == "stuck" and any(c.text.startswith("reading 0.77 unchanged for 6 intervals (6.0 h): a run that long "
                                                     "happens about once in ") and c.text.endswith("million for this "
                                                     "meter at this level") for c in causes)


def test_odds_beyond_a_trillion_are_not_spelt_out():
    _kind, causes = explain_last(noisy_pattern(3) + [0.77] * 24)
    assert causes[0].text.endswith("a run that long happens less than once in a trillion for this meter at this level")


def test_slot_names_and_the_forecast_sentence():
    assert slot_name(24 + 19, 3600) == "Tuesday 19:00"
    assert slot_name(5, 86_400) == "Saturday"
    assert forecast_sentence(0.93, 0.45, 0.40, 0.50).endswith("1.9x the band's upper edge (0.50 kWh)")
    assert "inside its band" in forecast_sentence(0.45, 0.45, 0.40, 0.50)


def test_a_catch_up_and_a_level_shift_say_what_happened():
    series = noisy_pattern(7)
    ex, _ = run(series)
    hours = len(series)
    # six hourly readings missing, then one reading with their energy
    _, fb = run([sum(series[hours - 24:hours - 17])], start=T0 + HOUR_MS * (hours + 6), extractor=ex)
    cause = rule_cause("catch_up", 0, fb, float(sum(series[hours - 24:hours - 17])), 3600)
    assert fb.catch_up[0] and cause.text.startswith("catch-up after 6.0 h without readings: ")
    assert cause.text.endswith("kWh delivered at once (about 7 intervals' usage)")

    ex, _ = run(noisy_pattern(14))
    _, fb = run([2 * v for v in noisy_pattern(3, seed=4)], start=T0 + HOUR_MS * 14 * 24, extractor=ex)
    (at,) = np.flatnonzero(fb.level_shift)
    text = rule_cause("level_shift", at, fb, 1.0, 3600).text
    assert text.startswith("usage has stepped up ") and text.endswith("the baseline now follows the new level")
