"""Per-meter forecasts: series preparation, Prophet, the seasonal-naive fallback, bands, warm start."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from forecaster import fitting
from forecaster.fitting import FAILED, PROPHET, SEASONAL_NAIVE, FitOptions, forecast_meter, seasonal_naive
from forecaster.series import MeterSeries, series_from_readings
from foundation.timeutil import HOUR_MS
from simulation.fleet import FleetConfig, simulate_fleet


def test_prophet_forecast_continues_the_meters_grid_with_a_band_that_covers_held_out_usage(hourly_fleet):
    series = series_from_readings(hourly_fleet, 30 * 86400)
    options = FitOptions(horizon_seconds=48 * 3600)
    inside, total = 0, 0
    for s in series:
        train = MeterSeries(s.meter_id, s.feeder_id, s.interval_seconds, s.end_ms[:-48], s.kwh[:-48])
        result = forecast_meter(train, options)
        assert result.outcome == PROPHET, result.reason
        assert result.model_version.startswith("prophet-")
        np.testing.assert_array_equal(result.end_ms, s.end_ms[-48:])  # exactly the held-out readings' timestamps
        assert (result.lower <= result.expected).all() and (result.expected <= result.upper).all()
        assert (result.lower >= 0).all()
        actual = s.kwh[-48:]
        inside += int(((actual >= result.lower) & (actual <= result.upper)).sum())
        total += int(np.isfinite(actual).sum())
        assert result.params is not None and {"k", "m", "delta", "beta", "sigma_obs"} <= set(result.params)
    # an 80% band: most held-out readings fall inside it, but not all (it is not a blanket)
    assert 0.6 <= inside / total <= 0.97, inside / total


def test_sub_hourly_meter_is_fitted_hourly_but_forecast_at_its_own_interval():
    fleet = simulate_fleet(FleetConfig(meters=1, days=10, interval=timedelta(minutes=15), seed=3, anomaly_rate=0))
    (s,) = series_from_readings(fleet.readings, 10 * 86400)
    result = forecast_meter(s, FitOptions(horizon_seconds=6 * 3600))
    assert result.outcome == PROPHET, result.reason
    assert len(result.end_ms) == 24
    np.testing.assert_array_equal(np.diff(result.end_ms), 900_000)
    assert result.end_ms[0] == s.end_ms[-1] + 900_000
    # the four quarters of one hour share the hourly expectation
    first_full_hour = np.flatnonzero(result.end_ms % HOUR_MS == 900_000)[0]
    quarter = result.expected[first_full_hour:first_full_hour + 4]
    assert np.ptp(quarter) == pytest.approx(0.0)
    assert 0.2 * np.nanmean(s.kwh) < quarter[0] < 5 * np.nanmean(s.kwh)


def _series(values: np.ndarray, interval_seconds: int = 3600) -> MeterSeries:
    start = pd.Timestamp("2026-03-02T01:00:00Z").value // 1_000_000
    end_ms = start + interval_seconds * 1000 * np.arange(len(values), dtype=np.int64)
    return MeterSeries("M1", "F1", interval_seconds, end_ms, np.asarray(values, dtype=float))


def test_short_flat_and_failed_fits_fall_back_to_seasonal_naive(monkeypatch):
    rng = np.random.default_rng(0)
    options = FitOptions(horizon_seconds=24 * 3600, min_history_days=3)

    short = forecast_meter(_series(rng.uniform(0.5, 1.5, 36)), options)
    assert (short.outcome, short.model_version) == (SEASONAL_NAIVE, "seasonal-naive-1d")
    assert short.reason.startswith("too little history")

    flat = forecast_meter(_series(np.full(24 * 10, 0.7)), options)
    assert flat.outcome == SEASONAL_NAIVE and flat.reason == "flat series"
    np.testing.assert_allclose(flat.expected, 0.7)
    assert (flat.upper > flat.expected).all()  # a band even for a perfectly regular meter

    def broken(*_args, **_kwargs):
        raise RuntimeError("Stan exploded")

    monkeypatch.setattr(fitting, "fit_prophet", broken)
    failed = forecast_meter(_series(rng.uniform(0.5, 1.5, 24 * 10)), options)
    assert failed.outcome == SEASONAL_NAIVE and "Stan exploded" in failed.reason

    nothing = forecast_meter(_series(np.full(10, np.nan)), options)
    assert nothing.outcome == FAILED and len(nothing.end_ms) == 0


def test_seasonal_naive_repeats_last_week_and_fills_gaps_from_the_week_before():
    rng = np.random.default_rng(1)
    week = rng.uniform(0.2, 3.0, 168)
    values = np.concatenate([week, week * 1.1])  # two weeks
    values[-168 + 5] = np.nan  # last week's value for horizon point 5 is missing
    result = seasonal_naive(_series(values), FitOptions(horizon_seconds=24 * 3600), "test")
    assert result.model_version == "seasonal-naive-7d"
    expected = week[:24] * 1.1
    expected[5] = week[5]  # taken from two weeks back
    np.testing.assert_allclose(result.expected, expected)










def test_country_holidays_are_modelled_when_configured(hourly_fleet):
    (s,) = series_from_readings(hourly_fleet, 28 * 86400)[:1]
    result = forecast_meter(s, FitOptions(horizon_seconds=24 * 3600, country_holidays="KE"))
    assert result.outcome == PROPHET, result.reason
    assert np.isfinite(result.expected).all() and len(result.expected) == 24


def test_outages_stuck_registers_and_spikes_in_the_history_are_not_learnt_as_usage():
    from forecaster.fitting import usual_usage_mask

    rng = np.random.default_rng(4)
    hours = np.arange(24 * 14)
    usage = 1.0 + 0.5 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 0.05, len(hours))
    usage[100:106] = 0.0  # outage
    usage[200:210] = usage[199]  # stuck register
    usage[250] *= 8  # spike
    s = _series(usage)
    usual = usual_usage_mask(s.kwh, s.end_ms, s.step_ms)
    assert not usual[100:106].any() and not usual[200:210].any() and not usual[250]
    assert usual.sum() >= len(usage) - 6 - 10 - 1 - 5  # next to nothing else
    # a meter that is often zero (e.g. solar-only hours) keeps its zeros
    often_zero = np.where(hours % 24 < 8, 0.0, usage)
    assert usual_usage_mask(often_zero, s.end_ms, s.step_ms)[hours % 24 < 8].all()

    fit = forecast_meter(_series(usage), FitOptions(horizon_seconds=24 * 3600))
    assert fit.outcome == PROPHET
    truth = 1.0 + 0.5 * np.sin(2 * np.pi * np.arange(len(usage), len(usage) + 24) / 24)
    np.testing.assert_allclose(fit.expected, truth, atol=0.1)  # neither dragged down nor lifted


def test_weekends_begin_at_the_fleets_local_midnight():
    from pydantic import ValidationError

    from forecaster.fitting import with_day_kind
    from forecaster.settings import ForecastSettings

    # intervals ending 2026-03-06 (a Friday) 21:00 .. 23:00 UTC start on Saturday in Nairobi (UTC+3)
    end_ms = pd.date_range("2026-03-06T21:00", periods=3, freq="h").as_unit("ms").asi8
    utc = with_day_kind(pd.DataFrame(index=range(3)), end_ms, HOUR_MS)
    nairobi = with_day_kind(pd.DataFrame(index=range(3)), end_ms, HOUR_MS, "Africa/Nairobi")
    assert not utc["weekend"].any()
    assert list(nairobi["weekend"]) == [False, True, True]  # 20:00-21:00 UTC is 23:00-24:00 Friday
    with pytest.raises(ValidationError, match="unknown time zone"):
        ForecastSettings(timezone="Mars/Olympus")
