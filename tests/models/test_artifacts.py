"""Versioned artifacts: saved atomically, listed, loaded newest first, other features or formats refused."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from detection.features import FEATURE_NAMES
from detection.isolation_forest import DETECTOR_FORMAT
from models.artifacts import ModelMismatchError, list_versions, load_model, new_version
from models.training import train_and_save
from simulation.fleet import FleetConfig, simulate_fleet


def test_train_save_list_load_and_feature_mismatch(tmp_path):
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
    # a model saved before the forecast-aware format (its metadata has no detector_format) is refused
    meta_path = tmp_path / second.version / "metadata.json"
    meta = json.loads(meta_path.read_text())
    assert meta["detector_format"] == DETECTOR_FORMAT
    del meta["detector_format"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError, match=f"detector format 1, this WattsUp scores format {DETECTOR_FORMAT}"):
        load_model(tmp_path, expected_features=FEATURE_NAMES)


def test_no_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="wattsup model train"):
        load_model(tmp_path, expected_features=FEATURE_NAMES)


def test_versions_never_collide(tmp_path):
    first = new_version(tmp_path)
    (tmp_path / first).mkdir()
    assert new_version(tmp_path) == f"{first}-2"


def test_a_model_pickled_by_another_layout_is_a_clear_error(tmp_path):
    frame = simulate_fleet(FleetConfig(meters=10, days=4, interval=timedelta(hours=1), seed=3)).readings
    model = train_and_save(frame, tmp_path, n_estimators=5)
    # what a model saved before the detector moved to detection.isolation_forest holds
    (model.path / "model.joblib").write_bytes(b"cmodels.isolation_detector\nMeterAnomalyDetector\n.")
    with pytest.raises(ModelMismatchError, match="retrain it"):
        load_model(tmp_path)
