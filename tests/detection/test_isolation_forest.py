"""The detector follows scikit-learn's API and weighs forecasts only where they help."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from detection.isolation_forest import MeterAnomalyDetector


def _with_forecast_column(rng, n: int, covered: float) -> np.ndarray:
    X = rng.normal(size=(n, 4))
    residual = X[:, 0] + 0.5 * rng.normal(size=n)  # the forecast's miss follows the baseline's
    return np.column_stack([X, np.where(rng.random(n) < covered, residual, np.nan)])


def test_readings_without_a_forecast_score_as_if_forecasts_never_existed():
    rng = np.random.default_rng(1)
    X = _with_forecast_column(rng, 4000, covered=0.7)
    det = MeterAnomalyDetector(n_estimators=50, forecast_feature=4).fit(X)
    assert det.uses_forecasts
    plain = MeterAnomalyDetector(n_estimators=50).fit(X[:, :4])
    probe = _with_forecast_column(np.random.default_rng(2), 500, covered=0.5)
    missing = np.isnan(probe[:, 4])
    np.testing.assert_array_equal(det.anomaly_score(probe[missing]), plain.anomaly_score(probe[missing, :4]))
    # with a forecast: one calibration serves both, so the flag rate stays about the contamination
    tail = det.tail_probability(det.anomaly_score(X))
    assert 0.5 * det.contamination < (tail[~np.isnan(X[:, 4])] <= det.contamination).mean() < 2 * det.contamination


def test_with_a_forecast_an_outlier_stays_flagged_and_the_forecasts_miss_alone_raises_nothing():
    rng = np.random.default_rng(3)
    X = _with_forecast_column(rng, 6000, covered=1.0)
    det = MeterAnomalyDetector(n_estimators=100, forecast_feature=4).fit(X)
    outlier, ordinary_but_missed = det.tail_probability(det.anomaly_score(np.array([[6.0, 6, 6, 6, 6.0],
                                                                                    [0.0, 0, 0, 0, 8.0]])))
    assert outlier <= det.contamination
    assert ordinary_but_missed > 0.5  # the meter's own history finds it ordinary (the forecast forest alone: 0.13)


def test_too_few_forecasts_to_learn_from_leave_the_feature_out_of_scores_and_explanations():
    rng = np.random.default_rng(4)
    X = _with_forecast_column(rng, 3000, covered=0.05)  # 150 rows < max_samples
    det = MeterAnomalyDetector(n_estimators=30, forecast_feature=4).fit(X)
    assert not det.uses_forecasts
    row = np.array([[0.0, 0, 0, 0, 9.0]])
    assert det.anomaly_score(row) == det.anomaly_score(np.array([[0.0, 0, 0, 0, np.nan]]))
    assert np.isinf(det.feature_scale_[4])
    with pytest.raises(ValueError, match="only the forecast feature may be NaN"):
        MeterAnomalyDetector(forecast_feature=4).fit(np.where(rng.random(X.shape) < 0.01, np.nan, X))


def test_sklearn_conventions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 4))
    det = MeterAnomalyDetector(n_estimators=50).fit(X)
    assert clone(det).get_params() == det.get_params()
    normal, outlier = det.score_samples(np.array([[0, 0, 0, 0], [8, 8, 8, 8]], dtype=float))
    assert normal > outlier  # higher score_samples = more normal
    tail = det.tail_probability(det.anomaly_score(np.array([[0, 0, 0, 0], [8, 8, 8, 8]], dtype=float)))
    assert tail[0] > 0.3 and tail[1] < 0.001
    assert set(np.unique(det.predict(X))) <= {-1, 1}
    assert 0.001 < (det.predict(X) == -1).mean() < 0.01  # about the configured contamination
