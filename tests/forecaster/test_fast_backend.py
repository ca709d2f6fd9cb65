"""The fast Prophet backend fits, predicts and builds features exactly as stock Prophet does."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prophet import Prophet

from forecaster.series import series_from_readings


def test_fast_prophet_fits_and_predicts_what_stock_prophet_does(hourly_fleet):
    from prophet import Prophet

    from forecaster.fast_backend import FastCmdStanPyBackend, FastProphet, quiet_stan_logging

    quiet_stan_logging()
    s = series_from_readings(hourly_fleet, 14 * 86400)[0]
    history = pd.DataFrame({"ds": pd.Series(s.end_ms.astype("datetime64[ms]")).astype("datetime64[ns]"), "y": s.kwh})
    forecasts = []
    for cls, backend in ((Prophet, None), (FastProphet, FastCmdStanPyBackend())):
        model = cls(uncertainty_samples=0, yearly_seasonality=False)
        if backend is not None:
            model.stan_backend = backend
        model.fit(history)
        forecasts.append(model.predict(model.make_future_dataframe(48, freq="h"))["yhat"].to_numpy())
    # Features agree to ~1e-11 (float rounding of the time axis); on a well-conditioned model that
    # leaves the optimum where it was. (With overlapping seasonalities, as the forecaster's weekday
    # and weekend shapes are, L-BFGS may stop at a slightly different point of a flat ridge.)
    np.testing.assert_allclose(forecasts[1], forecasts[0], rtol=1e-4, atol=1e-4)
    dates = pd.Series(pd.date_range("2026-03-01", periods=500, freq="h"))
    np.testing.assert_allclose(FastProphet.fourier_series(dates, 7, 3), Prophet.fourier_series(dates, 7, 3), atol=1e-10)


def test_fast_features_and_cached_stan_rows_match_prophets_own(hourly_fleet):
    import json

    from forecaster import fast_backend
    from forecaster.fast_backend import FastProphet

    history = pd.DataFrame({"ds": pd.date_range("2026-03-02", periods=400, freq="h")})
    history["weekend"] = history["ds"].dt.day_of_week >= 5
    history["weekday"] = ~history["weekend"]
    history["weekend_level"] = history["weekend"].astype(float)
    built = []
    for cls in (Prophet, FastProphet):
        model = cls(yearly_seasonality=False, daily_seasonality=False)
        model.add_seasonality("daily_weekday", period=1, fourier_order=8, condition_name="weekday")
        model.add_seasonality("daily_weekend", period=1, fourier_order=8, condition_name="weekend")
        model.add_regressor("weekend_level")
        model.history_dates = history["ds"]
        built.append(model.make_all_seasonality_features(model.setup_dataframe(history.assign(y=1.0), True)))
    (f0, p0, c0, m0), (f1, p1, c1, m1) = built
    assert list(f1.columns) == list(f0.columns) and p1 == p0 and m1 == m0
    assert c1.equals(c0)
    np.testing.assert_allclose(f1.to_numpy(), f0.to_numpy(), atol=1e-9)  # float rounding of the time axis
    matrix = f1.to_numpy()
    assert json.loads(fast_backend.matrix_json(matrix)) == matrix.tolist()
    cached = fast_backend.cached_rows()
    assert json.loads(fast_backend.matrix_json(matrix)) == matrix.tolist()  # now from cached rows
    assert fast_backend.cached_rows() == cached > 0  # the second call formatted no row again
