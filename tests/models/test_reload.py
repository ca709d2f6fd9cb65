"""Hot reload: the newest version is swapped in; one this code cannot score is refused."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import pytest

from models.reload import ModelReloader
from models.training import train_and_save
from simulation.fleet import FleetConfig, simulate_fleet


@pytest.fixture(scope="module")
def history():
    return simulate_fleet(FleetConfig(meters=20, days=4, interval=timedelta(hours=1), seed=9)).readings


def test_starts_without_a_model_and_picks_up_the_first_one(tmp_path, history, caplog):
    with caplog.at_level("WARNING"):
        reloader = ModelReloader(tmp_path)
    assert reloader.model is None and "no trained model" in caplog.text
    assert reloader.reload_if_newer() is False
    trained = train_and_save(history, tmp_path, n_estimators=5)
    assert reloader.reload_if_newer() is True and reloader.model.version == trained.version
    assert reloader.reload_if_newer() is False  # nothing newer


def test_a_newer_version_with_other_features_is_refused_and_the_running_model_stays(tmp_path, history):
    trained = train_and_save(history, tmp_path, n_estimators=5)
    reloader = ModelReloader(tmp_path)
    bad = tmp_path / "99999999T000000Z"
    shutil.copytree(trained.path, bad)
    meta = json.loads((bad / "metadata.json").read_text())
    meta.update(version=bad.name, features=meta["features"][:-1])
    (bad / "metadata.json").write_text(json.dumps(meta))
    assert reloader.reload_if_newer() is False
    assert reloader.model.version == trained.version
