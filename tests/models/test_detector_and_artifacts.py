"""The detector follows scikit-learn's API; artifacts are versioned and refuse other features."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone

from models.artifacts import ModelMismatchError, list_versions, load_model
from models.isolation_detector import MeterAnomalyDetector
from models.training import train_and_save
from producers.simulator import FleetConfig, simulate_fleet
from stream_processors.meter_state import FEATURE_NAMES


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


def test_train_save_list_load_and_feature_mismatch(tmp_path):
    from datetime import timedelta

    frame = simulate_fleet(FleetConfig(meters=20, days=5, interval=timedelta(hours=1), seed=3)).readings
    model = train_and_save(frame, tmp_path, n_estimators=20, source="test")
    versions = list_versions(tmp_path)
    assert [v.version for v in versions] == [model.version]
    meta = json.loads((tmp_path / model.version / "metadata.json").read_text())
    assert meta["features"] == list(FEATURE_NAMES)
    assert meta["rows"] > 1000 and meta["meters"] == 20 and meta["sklearn_version"]
    assert set(meta["thresholds"]) == {"INFO", "WARNING", "CRITICAL"}
    assert meta["training_window"]["start"].startswith("2026-03-02")
    loaded = load_model(tmp_path, expected_features=FEATURE_NAMES)
    assert loaded.version == model.version
    second = train_and_save(frame, tmp_path, n_estimators=20)
    assert load_model(tmp_path, expected_features=FEATURE_NAMES).version == second.version  # newest wins
    with pytest.raises(ModelMismatchError, match="missing: \\['extra_feature'\\]"):
        load_model(tmp_path, expected_features=[*FEATURE_NAMES, "extra_feature"])


def test_no_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="wattsup model train"):
        load_model(tmp_path, expected_features=FEATURE_NAMES)
