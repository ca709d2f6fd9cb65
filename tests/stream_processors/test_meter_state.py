"""Features and the missing/late/duplicate policy on small hand-made series."""

from __future__ import annotations

import numpy as np
import pytest

from stream_processors.meter_state import FEATURE_NAMES, F, FeatureExtractor, MeterStateStore

HOUR_MS = 3_600_000
T0 = 1_772_409_600_000  # Monday 2026-03-02 00:00 UTC


def run(series: list[float], meter: str = "m", start: int = T0, step_ms: int = HOUR_MS, extractor=None,
        interval_s: int = 3600):
    ex = extractor or FeatureExtractor()
    ts = start + step_ms * (1 + np.arange(len(series)))
    fb = ex.transform_batch([meter] * len(series), ts, np.array(series, dtype=float), np.full(len(series), interval_s))
    return ex, fb


def daily_pattern(days: int, scale: float = 1.0) -> list[float]:
    shape = [0.3] * 6 + [0.8, 1.0, 0.6] + [0.4] * 8 + [1.2, 1.6, 1.5, 1.0, 0.6, 0.4, 0.3]
    return [scale * v for _ in range(days) for v in shape]


def test_scale_invariance():
    a = run(daily_pattern(5) + [5.0, 0.0, 0.0, 0.0])[1].matrix
    b = run(daily_pattern(5, 1000.0) + [5000.0, 0.0, 0.0, 0.0])[1].matrix
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_spike_stands_out_against_the_hour_of_day_baseline():
    _, fb = run(daily_pattern(4) + [1.6 * 5])  # hour 00-01 usually 0.3; we send 8.0
    last = fb.matrix[-1]
    assert last[F["usage_vs_baseline"]] > 2.0
    assert last[F["baseline_z"]] > 6
    typical = fb.matrix[24 * 3:-1, F["usage_vs_baseline"]]
    assert np.abs(typical).max() < 0.3


def test_stuck_and_zero_runs_count_consecutive_readings():
    _, fb = run(daily_pattern(3) + [0.77] * 5 + [0.0] * 4)
    assert fb.unchanged_intervals[-9:-4].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(fb.matrix[-8:-4, F["unchanged_hours"]], np.log1p([1, 2, 3, 4]))
    assert fb.zero_hours[-4:].tolist() == [1, 2, 3, 4]
    assert (fb.matrix[-4:, F["zero_hours"]] > 0).all()


def test_gap_resets_change_and_runs():
    ex, fb = run(daily_pattern(3) + [0.77, 0.77])
    _, fb2 = run([0.77], start=T0 + HOUR_MS * (len(daily_pattern(3)) + 2 + 5), extractor=ex)  # 5 h gap
    assert fb2.matrix[0, F["change_z"]] == 0.0
    assert fb2.unchanged_intervals[0] == 0


def test_duplicates_are_not_scored_and_late_readings_do_not_move_state():
    ex, fb = run(daily_pattern(3))
    n = len(daily_pattern(3))
    last_ts = T0 + HOUR_MS * n
    before = ex.store.export_rows(ex.store.rows_for(["m"]))
    dup = ex.transform_batch(["m"], np.array([last_ts]), np.array([9.0]), np.array([3600]))
    assert dup.duplicate.all() and not dup.scored.any()
    late = ex.transform_batch(["m"], np.array([last_ts - 30 * 60_000]), np.array([0.4]), np.array([3600]))
    assert late.late.all() and late.scored.all()
    after = ex.store.export_rows(ex.store.rows_for(["m"]))
    for key in ("scalars", "how", "hod", "window", "last_ts"):
        np.testing.assert_array_equal(before[key], after[key])
    again = ex.transform_batch(["m"], np.array([last_ts - 30 * 60_000]), np.array([0.4]), np.array([3600]))
    assert again.duplicate.all()  # a late reading seen twice is a duplicate too
    stale = ex.transform_batch(["m"], np.array([T0 + HOUR_MS]), np.array([0.4]), np.array([3600]))
    assert stale.stale.all() and not stale.scored.any()


def test_several_readings_of_a_meter_in_one_batch_are_processed_in_order():
    series = daily_pattern(3)
    _, one_by_one = run(series)
    ex = FeatureExtractor()
    ts = T0 + HOUR_MS * (1 + np.arange(len(series)))
    meters = ["m"] * len(series) + ["other"] * len(series)
    batch = ex.transform_batch(meters, np.r_[ts, ts], np.r_[series, series], np.full(2 * len(series), 3600))
    np.testing.assert_allclose(batch.matrix[: len(series)], one_by_one.matrix)
    np.testing.assert_allclose(batch.matrix[len(series):], one_by_one.matrix)


def test_exported_state_resumes_identically():
    first, rest = daily_pattern(3), daily_pattern(1) + [4.0, 0.0]
    ex, _ = run(first)
    rows = ex.store.rows_for(["m"])
    saved = ex.store.export_rows(rows)
    restored = FeatureExtractor(MeterStateStore())
    restored.store.import_rows(["m"], saved)
    start = T0 + HOUR_MS * len(first)
    _, a = run(rest, start=start, extractor=ex)
    _, b = run(rest, start=start, extractor=restored)
    np.testing.assert_array_equal(a.matrix, b.matrix)


def test_daily_data_uses_day_of_week_slots():
    values = [10.0, 10, 10, 10, 10, 2, 2] * 3 + [10.0]
    _, fb = run(values, step_ms=24 * HOUR_MS, interval_s=86_400)
    assert fb.slot_labels[:7].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert fb.matrix.shape == (len(values), len(FEATURE_NAMES))
    assert abs(fb.matrix[-1, F["usage_vs_baseline"]]) < 0.2


@pytest.mark.parametrize("forecast, expected_sign", [(2.0, 1), (20.0, -1)])
def test_forecast_residual_against_the_band_and_the_usual_spread(forecast, expected_sign):
    ex, _ = run(daily_pattern(3))
    ts = np.array([T0 + HOUR_MS * (len(daily_pattern(3)) + 1)])
    fb = ex.transform_batch(["m"], ts, np.array([8.0]), np.array([3600]), expected=np.array([forecast]),
                            lower=np.array([forecast - 3]), upper=np.array([forecast + 3]))
    # the anomaly's field: (observed - forecast) / half the band (3 kWh here)
    assert fb.band_residual[0] == pytest.approx((8.0 - forecast) / 3)
    # the detector's feature: signed log(1 + |miss| / the slot's usual spread), the miss capped at 50 spreads
    spreads = np.clip((8.0 - forecast) / fb.spread[0], -50, 50)
    assert fb.matrix[0, F["forecast_residual"]] == pytest.approx(np.sign(spreads) * np.log1p(abs(spreads)))
    assert np.sign(fb.matrix[0, F["forecast_residual"]]) == expected_sign
    assert fb.expected[0] == forecast
    # the baseline features do not depend on the forecast
    without = run(daily_pattern(3))[0].transform_batch(["m"], ts, np.array([8.0]), np.array([3600]))
    keep = [i for i, name in enumerate(FEATURE_NAMES) if name != "forecast_residual"]
    np.testing.assert_array_equal(fb.matrix[0, keep], without.matrix[0, keep])


def test_without_a_forecast_the_forecast_fields_are_missing():
    ex, _ = run(daily_pattern(3))
    ts = np.array([T0 + HOUR_MS * (len(daily_pattern(3)) + 1)])
    fb = ex.transform_batch(["m"], ts, np.array([8.0]), np.array([3600]))
    assert np.isnan(fb.matrix[0, F["forecast_residual"]])
    assert np.isnan(fb.expected[0]) and np.isnan(fb.band_residual[0]) and np.isnan(fb.lower[0])
    assert fb.baseline[0] > 0


def test_a_burst_of_late_readings_never_makes_the_newest_reading_count_twice():
    """After a crash, a replay re-delivers old readings; the newest must still be known as seen."""
    ex = FeatureExtractor()
    minute = 60_000
    on_time = T0 + minute * 10 * np.arange(64)  # every 10 minutes
    ex.transform_batch(["m"] * 64, on_time, np.full(64, 1.0), np.full(64, 600))
    applied = ex.store.scalars[0, ex.store.S_N]
    # 32 readings that arrive late, all newer than the oldest remembered one
    late = np.r_[T0 + minute * (10 * np.arange(32, 63) + 1), T0 + minute * 625]
    fb = ex.transform_batch(["m"] * 32, late, np.full(32, 1.0), np.full(32, 600))
    assert fb.late.all()
    again = ex.transform_batch(["m"], on_time[-1:], np.array([1.0]), np.array([600]))
    assert again.duplicate.all()
    assert ex.store.scalars[0, ex.store.S_N] == applied
