"""The backtest scores Prophet and the seasonal-naive baseline on the same held-out points."""

from __future__ import annotations

from forecaster.evaluate import backtest
from forecaster.fitting import FAILED
from forecaster.runner import FitPool, fit_options
from forecaster.settings import ForecastSettings


def test_backtest_scores_prophet_and_the_seasonal_naive_baseline_on_the_same_points(tmp_path, fleet_series):
    settings = ForecastSettings(data_dir=tmp_path, horizon_seconds=24 * 3600)
    report = backtest(fleet_series, fit_options(settings), FitPool(1))
    prophet, naive = report.scores
    assert prophet.meters == naive.meters == len(fleet_series) and prophet.points == naive.points > 0
    assert report.prophet_fallbacks == 0
    # on regular daily/weekly load shapes with noise, the smoothed model beats last week's noisy value
    assert prophet.smape < naive.smape
    assert prophet.mae < naive.mae
    assert FAILED not in {s.method for s in report.scores}
