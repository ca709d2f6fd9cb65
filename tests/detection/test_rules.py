"""Rules: outages and stuck registers judged by the meter's habits, catch-ups, sustained departures."""

from __future__ import annotations

import numpy as np

from detection.rules import apply_rules
from foundation.timeutil import HOUR_MS
from tests.detection.hand_made import T0, noisy_pattern, run


def findings(series: list[float], spikes: bool = True, **kwargs):
    _, fb = run(series, **kwargs)
    mask = np.ones(len(series), dtype=bool)
    return apply_rules(fb, mask, np.ones(len(series)), spikes=spikes)


def test_an_outage_is_a_zero_run_improbable_for_this_meter():
    week = noisy_pattern(7)
    evening = week + noisy_pattern(1, seed=1)[:18] + [0.0] * 4  # the evening peak hours read zero
    found = findings(evening)
    assert (found.rule[-2:] == "outage").all()
    assert not found.hit[:-4].any()


def test_zeros_are_no_outage_on_a_meter_that_reads_zero_in_this_season():
    # a heating meter: whole days of zeros already, in the same hours; one more zero day is its habit
    days = [[0.0] * 24 if d >= 3 else [1.0 + (h % 3) for h in range(24)] for d in range(10)]
    found = findings([v for day in days for v in day] + [0.0] * 6)
    assert not (found.rule[-6:] == "outage").any()


def test_a_stuck_register_repeats_longer_than_this_meter_ever_does():
    series = noisy_pattern(7) + [0.77] * 5
    found = findings(series)
    assert (found.rule[-2:] == "stuck").all()
    assert not found.hit[:-5].any()


def test_a_counting_register_repeating_one_unit_at_low_flow_is_not_stuck():
    rng = np.random.default_rng(3)
    # a gas meter counting whole cubic metres at about one per hour: ones repeat for hours
    flow = np.clip(1.2 + 0.6 * np.sin(np.arange(24 * 14) * 2 * np.pi / 24) + 0.3 * rng.standard_normal(24 * 14), 0, None)
    register = np.floor(np.cumsum(flow))
    series = np.diff(np.r_[0.0, register]).tolist()
    assert max(len(list(g)) for g in np.split(series, np.flatnonzero(np.diff(series)) + 1)) >= 3
    found = findings(series)
    assert not (found.rule == "stuck").any()


def test_a_catch_up_after_a_gap_is_reported_as_one_and_never_escalated():
    days = noisy_pattern(5)
    ex, _ = run(days)
    # six hours missing, then a reading carrying about seven hours' usage
    after = T0 + HOUR_MS * (len(days) + 7)
    _, fb = run([0.4 * 7], start=after - HOUR_MS, extractor=ex)
    found = apply_rules(fb, np.ones(1, dtype=bool), np.ones(1), spikes=True)
    assert found.rule[0] == "catch_up" and found.strength[0] == 1.0
    assert fb.gap_intervals[0] == 6


def test_a_young_meters_spike_needs_a_day_of_history():
    early = noisy_pattern(1)[:10] + [5.0]
    later = noisy_pattern(3) + [5.0]
    assert not findings(early).hit.any()
    assert findings(later).rule[-1] == "spike"


def test_far_off_readings_are_flagged_even_where_a_model_scores():
    series = noisy_pattern(7)
    _, fb = run(series + [series[-24] * 3])  # three times its hour's usual: well within "far off"?
    modest = fb.feature("deviation")[-1]
    found_far = findings(series + [5.0], spikes=False)
    assert found_far.rule[-1] == "spike" and found_far.strength[-1] >= 1.0  # 5 kWh where 0.3 is usual
    if modest < 10:  # a reading short of ten spreads is left to the model
        assert not findings(series + [series[-24] * 3], spikes=False).hit[-1]


def building(days: int, seed: int = 0) -> list[float]:
    """A building: 2 kWh at night, 10 kWh from 08:00 to 18:00, 3% noise."""
    rng = np.random.default_rng(seed)
    return [(10.0 if 8 <= h < 18 else 2.0) * (1 + 0.03 * rng.standard_normal()) for _ in range(days) for h in range(24)]


def test_a_sustained_departure_is_flagged_without_a_model():
    # a holiday: the working hours read the night's level, hour after hour. Four weeks of history:
    # until a slot has seen many days, the meter's overall variance (night to day) widens its spread.
    holiday = [v if not 8 <= h < 18 else v / 5 for h, v in enumerate(building(1, seed=5))]
    found = findings(building(28) + holiday, spikes=False)
    assert (found.rule[-24:] == "sustained").sum() >= 3
    assert not found.hit[:-24].any()
