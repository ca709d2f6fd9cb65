"""Training: on the stream's own features of warmed-up meters; too little history is a clear error."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from detection.features import FEATURE_NAMES, WARMUP_DAYS
from detection.training import MIN_TRAINING_ROWS, NotEnoughHistoryError, fit_detector, history_features
from simulation.fleet import FleetConfig, simulate_fleet


def test_history_features_leave_out_the_warm_up_day():
    readings = simulate_fleet(FleetConfig(meters=10, days=3, interval=timedelta(hours=1), seed=4,
                                          missing_rate=0.0, late_rate=0.0)).readings
    history = history_features(readings)
    X = history.matrix
    assert len(history.store) == 10  # and the state of the replay's ten meters
    assert X.shape == (10 * (3 * 24 - int(WARMUP_DAYS * 24)), len(FEATURE_NAMES))
    assert np.isnan(X[:, FEATURE_NAMES.index("forecast_residual")]).all()  # no forecasts given


def test_fit_records_what_the_model_was_trained_on():
    readings = simulate_fleet(FleetConfig(meters=20, days=4, interval=timedelta(hours=1), seed=4)).readings
    model = fit_detector(readings, n_estimators=10, source="test")
    meta = model.metadata
    assert meta.features == list(FEATURE_NAMES) and meta.meters == 20 and meta.rows > MIN_TRAINING_ROWS
    assert meta.source == "test" and meta.forecast_coverage == 0.0 and model.path is None
    assert len(meta.fleet_tails["upper"]) == 24 and (model.fleet_tails.upper >= 0).all()


def test_too_short_a_history_is_refused_with_the_reason():
    readings = simulate_fleet(FleetConfig(meters=2, days=1, interval=timedelta(hours=1), seed=4)).readings
    with pytest.raises(NotEnoughHistoryError, match="only 0 readings of warmed-up meters"):
        fit_detector(readings)
