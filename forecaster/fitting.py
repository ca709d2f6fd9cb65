"""One meter's forecast: Prophet where the history allows it, else a seasonal-naive forecast.

Prophet is fitted cheaply: MAP only (``uncertainty_samples=0``, so no 1,000 trend simulations),
no yearly seasonality (28 days cannot show it), weekly seasonality plus one daily shape for
weekdays and one for weekends with a weekend level (Prophet's conditional seasonalities: one
shared daily shape forecast an institution's weekend nights below zero), few changepoints,
warm-started from the meter's parameters of the previous run, through
:class:`forecaster.fast_backend.FastCmdStanPyBackend`. Sub-hourly meters are fitted on hourly sums
(a quarter of the points) and the hourly expectation is spread evenly over the meter's intervals.

The band does not come from Prophet (without uncertainty samples it has none). It is analytic:
the empirical quantiles of the in-sample residuals *at the meter's own interval*, per hour of the
day (evening peaks are noisier than nights), at ``interval_width`` coverage (0.8 as Prophet's
default). Residuals at the meter's own interval keep the band honest for 15-minute meters fitted
on hourly sums, whose readings are noisier than a quarter of an hourly sum.

Too little history, a flat series or a failed or non-finite Prophet fit fall back to the
seasonal-naive forecast (the value one week ago, or one day ago with less than a week of
history, or the recent mean with less than a day), with a band from the same method's in-sample
errors, and the forecast says so in ``model_version``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forecaster.series import MeterSeries
from foundation.timeutil import DAY_MS, HOUR_MS, local_weekday

log = logging.getLogger(__name__)

PROPHET = "prophet"
SEASONAL_NAIVE = "seasonal_naive"
FAILED = "failed"
OUTCOMES = (PROPHET, SEASONAL_NAIVE, FAILED)

_MIN_PER_HOUR_OF_DAY = 8
"""Residuals an hour of the day needs for its own band; fewer use all hours' residuals."""
_INIT_PARAMS = ("k", "m", "delta", "beta", "sigma_obs")
"""What Prophet accepts as ``init`` (its fit also returns the trend and ``lp__``, not needed to start)."""
_MIN_HALF_BAND = 0.05
"""Smallest half-band as a share of the meter's mean usage: a perfectly regular history must not
make every later wobble infinitely many bands away."""


@dataclass(frozen=True)
class FitOptions:
    horizon_seconds: float = 48 * 3600
    fit_interval_seconds: int = 3600
    min_history_days: float = 3.0
    interval_width: float = 0.8
    n_changepoints: int = 10
    changepoint_prior_scale: float = 0.05
    country_holidays: str | None = None
    seasonality_mode: str = "additive"
    daily_fourier_order: int = 8
    timezone: str = "UTC"
    """Where the fleet's weekends begin at midnight (an IANA name, e.g. Africa/Nairobi)."""


@dataclass
class ForecastResult:
    meter_id: str
    feeder_id: str
    interval_seconds: int
    outcome: str
    """``prophet``, ``seasonal_naive`` or ``failed`` (no forecast at all)."""
    model_version: str
    end_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    expected: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lower: np.ndarray = field(default_factory=lambda: np.zeros(0))
    upper: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reason: str = ""
    """Why Prophet was not used (fallbacks) or what went wrong (failures)."""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """CPU time of this forecast: the fitting process and its Stan child process."""
    params: dict[str, np.ndarray] | None = None
    """Prophet's fitted parameters, to warm-start the next run."""


def prophet_version() -> str:
    import prophet

    return f"prophet-{prophet.__version__}"


# -- bands ---------------------------------------------------------------------------------
def _hour_of_day(end_ms: np.ndarray, step_ms: int) -> np.ndarray:
    """Hour of the day in which each interval starts (an interval ending 01:00 is the 00:00 hour)."""
    return ((end_ms - step_ms) % DAY_MS) // HOUR_MS


def residual_band(residuals: np.ndarray, res_end_ms: np.ndarray, horizon_ms: np.ndarray, step_ms: int,
                  width: float, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (lower <= 0 <= upper) to add to the expectation at each horizon point.

    Quantiles of the residuals of the same hour of the day, or of all residuals when an hour has
    too few; each side at least ``_MIN_HALF_BAND`` x ``level``.
    """
    ok = np.isfinite(residuals)
    residuals, res_end_ms = residuals[ok], res_end_ms[ok]
    q_lo, q_hi = (1 - width) / 2, 1 - (1 - width) / 2
    floor = _MIN_HALF_BAND * max(abs(level), 1e-6)
    if len(residuals) == 0:
        return np.full(len(horizon_ms), -floor), np.full(len(horizon_ms), floor)
    all_lo, all_hi = np.quantile(residuals, [q_lo, q_hi])
    lo_by_hour, hi_by_hour = np.full(24, all_lo), np.full(24, all_hi)
    hours = _hour_of_day(res_end_ms, step_ms)
    for h in range(24):
        r = residuals[hours == h]
        if len(r) >= _MIN_PER_HOUR_OF_DAY:
            lo_by_hour[h], hi_by_hour[h] = np.quantile(r, [q_lo, q_hi])
    target = _hour_of_day(horizon_ms, step_ms)
    return np.minimum(lo_by_hour[target], -floor), np.maximum(hi_by_hour[target], floor)


def _finish(series: MeterSeries, horizon_ms: np.ndarray, expected: np.ndarray, offsets: tuple[np.ndarray, np.ndarray],
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected and band at each horizon point; never below zero for a meter that never went below."""
    lo, hi = offsets
    if np.nanmin(series.kwh) >= 0:
        expected = np.maximum(expected, 0.0)
        return expected, np.maximum(expected + lo, 0.0), expected + hi
    return expected, expected + lo, expected + hi


# -- seasonal naive ------------------------------------------------------------------------
def _seasonal_values(kwh: np.ndarray, index: np.ndarray, season: int) -> np.ndarray:
    """kwh at ``index`` (beyond the series), taken from the newest same-phase observed value."""
    last = len(kwh) - 1
    idx = index - season * np.ceil((index - last) / season).astype(np.int64)
    values = np.full(len(index), np.nan)
    for _ in range(max(1, len(kwh) // season)):  # step back one more season where a value is missing
        ok = idx >= 0
        take = ok & np.isnan(values)
        values[take] = kwh[idx[take]]
        if not np.isnan(values).any():
            break
        idx = idx - season
    return values


def seasonal_naive(series: MeterSeries, options: FitOptions, reason: str) -> ForecastResult:
    """The value one season ago (a week, else a day), the recent mean with less than a day."""
    started = time.perf_counter()
    kwh = series.kwh
    observed = np.isfinite(kwh)
    if not observed.any():
        return ForecastResult(series.meter_id, series.feeder_id, series.interval_seconds, FAILED, "none",
                              reason="no observed readings", seconds=time.perf_counter() - started)
    horizon_ms = series.horizon_ms(options.horizon_seconds)
    steps_per_day = DAY_MS // series.step_ms
    level = float(np.nanmean(kwh))
    n = len(kwh)
    if n >= 7 * steps_per_day:
        season, name = 7 * steps_per_day, "seasonal-naive-7d"
    elif n >= steps_per_day:
        season, name = steps_per_day, "seasonal-naive-1d"
    else:
        season, name = 0, "naive-mean"
    if season:
        index = (horizon_ms - series.end_ms[0]) // series.step_ms
        expected = _seasonal_values(kwh, index, season)
        in_sample = kwh[season:] - kwh[:-season]
        res_ms = series.end_ms[season:]
        fallback_level = float(np.nanmean(kwh[-season:])) if np.isfinite(kwh[-season:]).any() else level
        expected = np.where(np.isfinite(expected), expected, fallback_level)
    else:
        expected = np.full(len(horizon_ms), level)
        in_sample, res_ms = kwh - level, series.end_ms
    offsets = residual_band(in_sample, res_ms, horizon_ms, series.step_ms, options.interval_width, level)
    expected, lower, upper = _finish(series, horizon_ms, expected, offsets)
    return ForecastResult(series.meter_id, series.feeder_id, series.interval_seconds, SEASONAL_NAIVE, name,
                          horizon_ms, expected, lower, upper, reason=reason, seconds=time.perf_counter() - started)


# -- history cleaning ----------------------------------------------------------------------
_STUCK_RUN = 4
"""Identical consecutive readings from this many on are a stuck register, not usage."""
_OUTLIER_SPREADS = 6.0
"""Readings this many robust spreads above the usual for their hour of the day are left out."""


def usual_usage_mask(kwh: np.ndarray, end_ms: np.ndarray, step_ms: int) -> np.ndarray:
    """Readings that look like normal usage (True) rather than an outage, a stuck register or a spike.

    The forecast is the *expected* usage, and anomalies already in the history would be learnt as
    normal: an outage drags the daily shape towards zero (and the forecast, clipped at zero, then
    misses every hour by 100%), a stuck register flattens it, a spike lifts it. Cheap rules, no
    second fit: zeros of a meter that is rarely zero, runs of 4+ identical non-zero readings, and readings
    more than 6 robust spreads (MAD) above the median of their hour of the day. If that would
    leave out half the history, the rules do not describe this meter and nothing is left out.
    """
    ok = np.isfinite(kwh)
    values = np.where(ok, kwh, np.nan)
    if ok.sum() < 8:
        return ok
    zeros = values == 0
    if zeros.sum() < 0.1 * ok.sum():  # a meter that is rarely zero: its zeros are outages
        ok &= ~zeros
    same = np.zeros(len(values), dtype=bool)
    same[1:] = values[1:] == values[:-1]
    run_start = np.flatnonzero(~same)
    run_length = np.diff(np.append(run_start, len(values)))
    stuck = np.repeat(run_length >= _STUCK_RUN, run_length)
    ok &= ~(stuck & ~zeros)  # zeros are outages (above) or, for an often-zero meter, normal
    hours = _hour_of_day(end_ms, step_ms)
    for h in range(24):
        in_hour = ok & (hours == h)
        if in_hour.sum() < 5:
            continue
        v = values[in_hour]
        median = np.median(v)
        spread = 1.4826 * np.median(np.abs(v - median))
        if spread > 0:
            ok[in_hour] = v <= median + _OUTLIER_SPREADS * spread
    if ok.sum() < 0.5 * np.isfinite(kwh).sum():  # the rules do not fit this meter: keep its history
        return np.isfinite(kwh)
    return ok


# -- Prophet -------------------------------------------------------------------------------
_BACKEND: Any = None


def _backend(parent_dir: str | None = None) -> Any:
    """One fast backend per process (see :mod:`forecaster.fast_backend`).

    ``parent_dir``: where the process keeps Stan's temporary files (a pool's worker gets one under
    the pool's directory, which the pool removes however its workers end).
    """
    global _BACKEND
    if _BACKEND is None:
        import tempfile

        from forecaster.fast_backend import FastCmdStanPyBackend, quiet_stan_logging

        quiet_stan_logging()
        temp_dir = tempfile.mkdtemp(prefix="stan-", dir=parent_dir) if parent_dir else None
        _BACKEND = FastCmdStanPyBackend(temp_dir)
    return _BACKEND


def _fit_grid(series: MeterSeries, fit_interval_seconds: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(intervals per bucket, bucket-end ms, bucket sums, bucket of each native point).

    Sub-hourly meters are summed into ``fit_interval_seconds`` buckets; a bucket with a missing
    reading is NaN (a partial sum would look like a dip).
    """
    per = fit_interval_seconds // series.interval_seconds if fit_interval_seconds else 1
    if per <= 1 or fit_interval_seconds % series.interval_seconds:
        return 1, series.end_ms, series.kwh, np.arange(len(series.kwh))
    bucket_ms = fit_interval_seconds * 1000
    bucket_end = -(-series.end_ms // bucket_ms) * bucket_ms  # ceil: readings carry their interval's end
    first = bucket_end[0]
    which = (bucket_end - first) // bucket_ms
    n = int(which[-1]) + 1
    sums = np.bincount(which, weights=np.nan_to_num(series.kwh), minlength=n)
    counts = np.bincount(which, weights=np.isfinite(series.kwh).astype(float), minlength=n)
    sums[counts < per] = np.nan
    return per, first + bucket_ms * np.arange(n, dtype=np.int64), sums, which


def _to_ds(ms: np.ndarray) -> pd.Series:
    return pd.Series(ms.astype("datetime64[ms]")).astype("datetime64[ns]")


def with_day_kind(frame: pd.DataFrame, end_ms: np.ndarray, step_ms: int, timezone: str = "UTC") -> pd.DataFrame:
    """Add the ``weekday`` / ``weekend`` conditions of the local day each interval starts in.

    Weekends begin at local midnight: in Nairobi (UTC+3) Saturday starts at 21:00 UTC on Friday.
    """
    day_of_week = local_weekday(end_ms - step_ms, timezone)
    frame["weekend"] = day_of_week >= 5
    frame["weekday"] = ~frame["weekend"]
    frame["weekend_level"] = frame["weekend"].astype(float)
    return frame


def fit_prophet(series: MeterSeries, options: FitOptions, init: dict[str, np.ndarray] | None = None) -> ForecastResult:
    """Prophet forecast of one meter; raises on a failed fit (the caller falls back)."""
    from forecaster.fast_backend import FastProphet

    started = time.perf_counter()
    usual = usual_usage_mask(series.kwh, series.end_ms, series.step_ms)
    clean = MeterSeries(series.meter_id, series.feeder_id, series.interval_seconds, series.end_ms,
                        np.where(usual, series.kwh, np.nan))
    per, bucket_ms, y, which = _fit_grid(clean, options.fit_interval_seconds)
    step_bucket_ms = series.step_ms * per
    span_days = series.span_days
    model = FastProphet(
        growth="linear", n_changepoints=options.n_changepoints, changepoint_range=0.9,
        changepoint_prior_scale=options.changepoint_prior_scale, yearly_seasonality=False,
        weekly_seasonality=span_days >= 7, daily_seasonality=False, uncertainty_samples=0,
        interval_width=options.interval_width, seasonality_mode=options.seasonality_mode,
    )
    # A daily shape per kind of day: a school's weekday plateau is absent at weekends, and a
    # household's morning peak comes later. One additive daily shape (Prophet's default) averages
    # them and forecasts weekend nights of an institution below zero.
    model.add_seasonality("daily_weekday", period=1, fourier_order=options.daily_fourier_order, condition_name="weekday")
    model.add_seasonality("daily_weekend", period=1, fourier_order=options.daily_fourier_order, condition_name="weekend")
    model.add_regressor("weekend_level", mode=options.seasonality_mode)  # and a level per kind of day
    if options.country_holidays:
        model.add_country_holidays(country_name=options.country_holidays)
    model.stan_backend = _backend()
    history = with_day_kind(pd.DataFrame({"ds": _to_ds(bucket_ms), "y": y}), bucket_ms, step_bucket_ms,
                             options.timezone)
    fit_kwargs: dict[str, Any] = {}
    if init is not None:
        fit_kwargs["init"] = init
    model.fit(history, **fit_kwargs)
    horizon_ms = series.horizon_ms(options.horizon_seconds)
    future_buckets = -(-horizon_ms // step_bucket_ms) * step_bucket_ms if per > 1 else horizon_ms
    future_unique, future_which = np.unique(future_buckets, return_inverse=True)
    all_ms = np.concatenate([bucket_ms, future_unique])
    frame = with_day_kind(pd.DataFrame({"ds": _to_ds(all_ms)}), all_ms, step_bucket_ms, options.timezone)
    yhat = model.predict(frame)["yhat"].to_numpy() / per
    if not np.isfinite(yhat).all():
        raise ValueError("Prophet returned non-finite values")
    fitted_native = yhat[: len(bucket_ms)][which]
    expected = yhat[len(bucket_ms):][future_which]
    level = float(np.nanmean(series.kwh))
    offsets = residual_band(clean.kwh - fitted_native, series.end_ms, horizon_ms, series.step_ms,
                            options.interval_width, level)
    expected, lower, upper = _finish(series, horizon_ms, expected, offsets)
    params = {k: np.asarray(model.params[k], dtype=float).reshape(-1) for k in _INIT_PARAMS}
    for scalar in ("k", "m", "sigma_obs"):  # Prophet takes float(init[...]) of these
        params[scalar] = params[scalar][0]
    return ForecastResult(series.meter_id, series.feeder_id, series.interval_seconds, PROPHET, prophet_version(),
                          horizon_ms, expected, lower, upper, seconds=time.perf_counter() - started, params=params)


def forecast_meter(series: MeterSeries, options: FitOptions, init: dict[str, np.ndarray] | None = None) -> ForecastResult:
    """Prophet, or the seasonal-naive fallback with the reason; never raises."""
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    try:
        observed = series.kwh[np.isfinite(series.kwh)]
        result = None
        if series.span_days < options.min_history_days or len(observed) < 2:
            reason = f"too little history ({series.span_days:.2f} days < {options.min_history_days:g})"
        elif np.ptp(observed) <= 1e-9 * max(1.0, abs(float(observed[0]))):
            reason = "flat series"
        else:
            try:
                result = fit_prophet(series, options, init)
            except Exception as exc:  # noqa: BLE001 - any Prophet/Stan failure falls back
                reason = f"prophet failed: {type(exc).__name__}: {exc}"[:300]
        if result is None:
            result = seasonal_naive(series, options, reason)
    except Exception as exc:  # noqa: BLE001 - one bad meter never stops the run
        log.exception("forecast of meter %s failed", series.meter_id)
        result = ForecastResult(series.meter_id, series.feeder_id, series.interval_seconds, FAILED, "none",
                                reason=f"{type(exc).__name__}: {exc}"[:300])
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = _cpu_seconds() - cpu_started
    return result


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (Stan runs as a child process)."""
    children = os.times()  # clock-tick resolution, fine for a Stan run
    return time.process_time() + children.children_user + children.children_system
