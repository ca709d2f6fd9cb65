"""Features on small hand-made series: scale-free, spikes and runs, gaps, rounds, forecasts."""

from __future__ import annotations

import numpy as np
import pytest

from detection.features import FEATURE_INDEX as F
from detection.features import (
    DEVIATION_EXCURSION,
    FEATURE_NAMES,
    HABIT_MIN_COUNT,
    FeatureExtractor,
    forecast_deviation,
    occurrences,
    round_indices,
)
from detection.baseline import FleetTails
from detection.meter_state import Scalar
from foundation.timeutil import HOUR_MS
from tests.detection.hand_made import T0, batch, daily_pattern, noisy_pattern, run


def test_scale_invariance():
    a = run(daily_pattern(5) + [5.0, 0.0, 0.0, 0.0])[1].matrix
    b = run(daily_pattern(5, 1000.0) + [5000.0, 0.0, 0.0, 0.0])[1].matrix
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_spike_stands_out_against_the_hour_of_day_baseline():
    _, fb = run(daily_pattern(4) + [1.6 * 5])  # hour 00-01 usually 0.3; we send 8.0
    last = fb.matrix[-1]
    assert last[F["relative_deviation"]] > 2.0
    assert last[F["deviation"]] > 10
    assert np.abs(fb.matrix[24 * 3:-1, F["relative_deviation"]]).max() < 0.3
    assert np.abs(fb.matrix[24 * 3:-1, F["deviation"]]).max() < 1.0


def test_stuck_and_zero_runs_count_consecutive_readings():
    _, fb = run(daily_pattern(3) + [0.77] * 5 + [0.0] * 4)
    # a run counts the readings of one value from its second; each more is less probable
    assert fb.repeat_run[-9:-4].tolist() == [0, 2, 3, 4, 5]
    assert (np.diff(fb.matrix[-8:-4, F["repeat_surprise"]]) > 0).all()
    assert fb.zero_run[-4:].tolist() == [1, 2, 3, 4]
    assert (np.diff(fb.matrix[-4:, F["zero_surprise"]]) > 0).all() and fb.matrix[-4, F["zero_surprise"]] > 0


def test_gap_resets_change_and_runs():
    ex, fb = run(daily_pattern(3) + [0.77, 0.77])
    _, fb2 = run([0.77], start=T0 + HOUR_MS * (len(daily_pattern(3)) + 2 + 5), extractor=ex)  # 5 h gap
    assert fb2.gap_intervals[0] == 5
    assert fb2.matrix[0, F["change"]] == 0.0
    assert fb2.repeat_run[0] == 0


def test_several_readings_of_a_meter_in_one_batch_are_processed_in_order():
    series = daily_pattern(3)
    _, one_by_one = run(series)
    ex = FeatureExtractor()
    ts = T0 + HOUR_MS * (1 + np.arange(len(series)))
    meters = ["m"] * len(series) + ["other"] * len(series)
    both = ex.transform(batch(meters, np.r_[ts, ts], np.r_[series, series], np.full(2 * len(series), 3600)))
    np.testing.assert_allclose(both.matrix[: len(series)], one_by_one.matrix)
    np.testing.assert_allclose(both.matrix[len(series):], one_by_one.matrix)


def test_rounds_take_the_kth_reading_of_every_meter():
    rows = np.array([5, 7, 5, 5, 7, 9])
    assert occurrences(rows).tolist() == [0, 0, 1, 2, 1, 0]
    assert [r.tolist() for r in round_indices(occurrences(rows))] == [[0, 1, 5], [2, 4], [3]]
    assert round_indices(np.array([], dtype=np.int64)) == []


def test_daily_data_uses_day_of_week_slots():
    values = [10.0, 10, 10, 10, 10, 2, 2] * 3 + [10.0]
    _, fb = run(values, step_ms=24 * HOUR_MS, interval_s=86_400)
    assert fb.slot_labels[:7].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert fb.matrix.shape == (len(values), len(FEATURE_NAMES))
    assert abs(fb.matrix[-1, F["relative_deviation"]]) < 0.2


@pytest.mark.parametrize("forecast, expected_sign", [(2.0, 1), (20.0, -1)])
def test_forecast_residual_against_the_band_and_the_usual_spread(forecast, expected_sign):
    ex, _ = run(daily_pattern(3))
    ts = np.array([T0 + HOUR_MS * (len(daily_pattern(3)) + 1)])
    fb = ex.transform(batch(["m"], ts, [8.0], [3600], expected=np.array([forecast]),
                            lower=np.array([forecast - 3]), upper=np.array([forecast + 3])))
    # the anomaly's field: (observed - forecast) / half the band (3 kWh here)
    assert fb.band_residual[0] == pytest.approx((8.0 - forecast) / 3)
    # the detector's feature: signed log(1 + |miss| / the slot's usual spread), the miss capped at 50 spreads
    spreads = np.clip((8.0 - forecast) / fb.spread[0], -50, 50)
    assert fb.matrix[0, F["forecast_residual"]] == pytest.approx(np.sign(spreads) * np.log1p(abs(spreads)))
    assert np.sign(fb.matrix[0, F["forecast_residual"]]) == expected_sign
    assert fb.expected[0] == forecast
    # the baseline features do not depend on the forecast
    without = run(daily_pattern(3))[0].transform(batch(["m"], ts, [8.0], [3600]))
    keep = [i for i, name in enumerate(FEATURE_NAMES) if name != "forecast_residual"]
    np.testing.assert_array_equal(fb.matrix[0, keep], without.matrix[0, keep])


def test_without_a_forecast_the_forecast_fields_are_missing():
    ex, _ = run(daily_pattern(3))
    ts = np.array([T0 + HOUR_MS * (len(daily_pattern(3)) + 1)])
    fb = ex.transform(batch(["m"], ts, [8.0], [3600]))
    assert np.isnan(fb.matrix[0, F["forecast_residual"]])
    assert np.isnan(fb.expected[0]) and np.isnan(fb.band_residual[0]) and np.isnan(fb.lower[0])
    assert fb.baseline[0] > 0


def test_forecast_deviation_is_a_signed_log_and_keeps_missing_values():
    np.testing.assert_allclose(forecast_deviation(np.array([-3.0, 0.0, 3.0])), [-np.log(4), 0.0, np.log(4)])
    assert np.isnan(forecast_deviation(np.array([np.nan]))[0])


def test_peer_correction_can_be_left_out():
    """Twelve meters of one feeder all doubling at once: corrected, the shared part is discounted."""
    history = daily_pattern(3)
    meters = [f"m{i}" for i in range(12)]
    ts = T0 + HOUR_MS * (1 + np.arange(len(history)))
    extractors = (FeatureExtractor(), FeatureExtractor())
    for ex in extractors:
        for m in meters:
            ex.transform(batch([m] * len(history), ts, history, np.full(len(history), 3600)))
    now = np.full(12, T0 + HOUR_MS * (len(history) + 1))
    doubled = np.full(12, 2 * history[0])
    corrected = extractors[0].transform(batch(meters, now, doubled, np.full(12, 3600), feeder_ids=["F"] * 12))
    plain = extractors[1].transform(batch(meters, now, doubled, np.full(12, 3600), feeder_ids=["F"] * 12),
                                    correct_peers=False)
    assert (plain.matrix[:, F["relative_deviation"]] > 0.5).all()
    np.testing.assert_allclose(corrected.matrix[:, F["relative_deviation"]], 0.0, atol=1e-12)


def test_a_late_reading_is_judged_alone_whichever_peers_share_its_batch():
    """Its interval was scored with its peers already; a stream's micro-batch is chance."""
    history = daily_pattern(3)
    meters = [f"m{i}" for i in range(12)]
    ts = T0 + HOUR_MS * (1 + np.arange(len(history)))
    ex = FeatureExtractor()
    for m in meters:
        ex.transform(batch([m] * len(history), ts, history, np.full(len(history), 3600)))
    now = T0 + HOUR_MS * (len(history) + 1)
    ex.transform(batch(["m0"], [now + HOUR_MS], [history[1]], [3600]))  # m0 is an hour ahead: `now` is late
    doubled = np.full(12, 2 * history[0])
    fb = ex.transform(batch(meters, np.full(12, now), doubled, np.full(12, 3600), feeder_ids=["F"] * 12))
    assert fb.late.tolist() == [True] + [False] * 11
    assert fb.matrix[0, F["relative_deviation"]] > 0.5  # not discounted
    np.testing.assert_allclose(fb.matrix[1:, F["relative_deviation"]], 0.0, atol=1e-12)


def test_a_counting_register_in_a_warm_spell_reads_zero_more_readily():
    """Whole units at about two an hour for three weeks, then three days at 2 or at 0.8 an hour, then
    three hours of zeros: as surprising as a Poisson register says (3 zero hours at rate r: e^-3r)."""
    rng = np.random.default_rng(1)
    winter = [float(v) for v in rng.poisson(2.0, 24 * 21)]
    for rate in (2.0, 0.8):
        history = winter + [float(v) for v in rng.poisson(rate, 24 * 3)]
        surprise = run(history + [0.0, 0.0, 0.0])[1].matrix[-1, F["zero_surprise"]]
        assert surprise == pytest.approx(3 * rate / np.log(10), abs=0.3), rate


def _with_loads(days: int, nights: dict[int, list[float]]) -> list[float]:
    """:func:`noisy_pattern` with loads added from 23:00 on the given nights (day -> kWh per hour)."""
    series = noisy_pattern(days)
    for day, loads in nights.items():
        for k, extra in enumerate(loads):
            series[24 * day + 23 + k] += extra
    return series


def test_a_load_drawn_again_on_another_night_lies_in_the_meters_usual_range():
    # a car charged on two nights, each a partial first hour and full ones: once the second night's
    # occasion has begun, its load lies in the meter's usual range (below the three spreads of an excursion)
    charge = [3.6, 7.2, 7.2]
    _, fb = run(_with_loads(11, {7: charge, 9: charge}))
    deviation = fb.feature("deviation")
    first, second = 24 * 7 + 23, 24 * 9 + 23
    assert deviation[first] > 10
    assert deviation[second + 2] < DEVIATION_EXCURSION


def test_one_long_load_is_one_occasion_not_a_habit_within_itself():
    # a heater left on for eight hours: eight excursions, one occasion
    series = _with_loads(10, {8: [3.0] * 8})
    start = 24 * 8 + 23
    ex, _ = run(series[:start])
    row = ex.store.rows_for(["m"])[0]
    before = ex.store.scalars[row, Scalar.HABIT_COUNT]
    run(series[start:start + 8], start=T0 + HOUR_MS * start, extractor=ex)
    assert before + 0.9 < ex.store.scalars[row, Scalar.HABIT_COUNT] <= before + 1.0


def test_a_young_meter_may_draw_what_the_fleet_draws_at_that_hour():
    # the fleet charges cars from 22:00 (tails 15 levels above usual there, nothing at noon); a meter in
    # its third day draws 7 kWh more from 22:00, or at noon
    upper = np.zeros(24)
    upper[22] = 15.0
    deviations = {}
    for hour in (22, 11):
        series = noisy_pattern(3)
        at = 24 * 2 + hour  # the reading ending at hour + 1, in the hour-of-day slot ``hour``
        series[at] += 7.0
        _, alone = run(series)
        _, with_fleet = run(series, extractor=FeatureExtractor(fleet_tails=FleetTails(upper)))
        assert alone.slots.hour_of_day[at] == hour
        deviations[hour] = alone.feature("deviation")[at], with_fleet.feature("deviation")[at]
    assert deviations[22][0] > 10 and deviations[22][1] < DEVIATION_EXCURSION
    assert deviations[11][0] == deviations[11][1] > 10


def test_a_meter_waking_from_a_dormant_spell_starts_a_habit_not_an_alarm():
    # a pump off all winter: ten days of zeros, then its first run of the season, three hours at 4 kWh
    # and the same again in the evening; a household drawing the same loads is judged as usual
    dormant = [0.0] * (24 * 10)
    season = [0.0] * 5 + [4.0] * 3 + [0.0] * 10 + [4.0] * 2 + [0.0] * 4
    _, pump = run(dormant + season)
    household = noisy_pattern(10)
    _, house = run(household + [v + w for v, w in zip(noisy_pattern(1, seed=1), season)])
    first_run = slice(24 * 10 + 5, 24 * 10 + 8)
    assert (pump.feature("deviation")[first_run] < DEVIATION_EXCURSION).all()
    assert (pump.feature("deviation")[24 * 10 + 18:24 * 10 + 20] < DEVIATION_EXCURSION).all()
    assert house.feature("deviation")[24 * 10 + 5] > 10


def test_a_habit_covers_loads_of_its_size_not_smaller_extra_loads():
    # a car charged on two nights is a habit; then 2 kWh extra in an afternoon is no car: judged as usual
    series = _with_loads(11, {7: [3.6, 7.2, 7.2], 9: [3.6, 7.2, 7.2]})
    afternoon = 24 * 10 + 15
    series[afternoon] += 2.0
    ex, _ = run(series[:afternoon])
    assert ex.store.scalars[0, Scalar.HABIT_COUNT] >= HABIT_MIN_COUNT
    _, fb = run(series[afternoon:afternoon + 1], start=T0 + HOUR_MS * afternoon, extractor=ex)
    assert fb.feature("deviation")[0] > DEVIATION_EXCURSION


def test_a_register_standing_still_against_its_flow_is_surprising_however_long_its_night_zeros_last():
    # a gas register counting whole units: nights at zero for hours (long zero runs are its habit),
    # days at two to four units an hour; then five hours of zeros on a morning
    day = [0.0] * 6 + [3.0] * 5 + [2.0, 3.0] * 3 + [3.0, 4.0, 3.0, 2.0] + [0.0] * 3
    rng = np.random.default_rng(5)
    series = [max(v + float(rng.integers(-1, 2)), 0.0) if v else 0.0 for _ in range(14) for v in day]
    morning = 24 * 13 + 5
    series[morning:morning + 5] = [0.0] * 5
    _, fb = run(series)
    # each zero of the run, once it is two hours long, is an outage's (rules.OUTAGE_SURPRISE)
    assert (fb.feature("zero_surprise")[morning + 3:morning + 5] > 4.0).all()
