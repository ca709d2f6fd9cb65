"""The engine flags and explains injected anomalies, one model call per batch, rules for young meters."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from detection.engine import BASELINE_RULES, DetectionEngine
from detection.offline import detect_frame
from detection.training import fit_detector
from foundation.timeutil import epoch_ms
from simulation.fleet import FleetConfig, simulate_fleet
from tests.detection.hand_made import T0, batch, noisy_pattern


@pytest.fixture(scope="module")
def trained():
    train = simulate_fleet(FleetConfig(meters=100, days=10, interval=timedelta(hours=1), seed=1001)).readings
    return fit_detector(train, n_estimators=60)


@pytest.fixture(scope="module")
def labelled():
    return simulate_fleet(FleetConfig(meters=200, days=14, interval=timedelta(hours=1), seed=202))


def test_anomalies_carry_causes_severity_and_version(trained, labelled):
    result = detect_frame(labelled.readings, trained)
    a = result.anomalies
    assert len(a) > 20
    assert a["causes"].str.len().gt(0).all()
    assert set(a["severity"]) <= {"INFO", "WARNING", "CRITICAL"}
    assert set(a["model_version"]) <= {trained.version, BASELINE_RULES}
    outages = a[a["kind"] == "outage"]
    assert outages["causes"].str.contains("no consumption").any()
    assert a["causes"].str.contains(r"usage \d+\.\dx the usual for (?:Monday|Tuesday|Wednesday|Thursday|Friday|"
                                    r"Saturday|Sunday) \d\d:00").any()


def test_one_model_call_per_batch(trained, labelled, monkeypatch):
    calls = []
    original = trained.detector.anomaly_score
    monkeypatch.setattr(trained.detector, "anomaly_score", lambda X: calls.append(len(X)) or original(X))
    engine = DetectionEngine(trained)
    frame = labelled.readings.sort_values("timestamp").iloc[:20_000]
    engine.score(batch(frame["meter_id"].tolist(), epoch_ms(frame["timestamp"]), frame["kwh"].to_numpy(),
                       frame["interval_seconds"].to_numpy(), feeder_ids=frame["feeder_id"].tolist()))
    assert len(calls) == 1 and calls[0] > 1000


def test_sensitivity_changes_how_much_is_flagged(trained, labelled):
    frame = labelled.readings
    low = detect_frame(frame, trained, sensitivity=0.5).scores["flag"].sum()
    mid = detect_frame(frame, trained, sensitivity=1.0).scores["flag"].sum()
    high = detect_frame(frame, trained, sensitivity=3.0).scores["flag"].sum()
    assert low < mid < high


def test_cold_start_meters_are_scored_by_baseline_rules(trained):
    engine = DetectionEngine(trained)
    ts = T0 + 3_600_000 * np.arange(1, 13)
    # a new meter that gets stuck (readings that varied in the 4th decimal, then none)
    kwh = np.r_[noisy_pattern(1)[:4], np.full(8, 0.7731)]
    res = engine.score(batch(["new"] * 12, ts, kwh, np.full(12, 3600), feeder_ids=["F"] * 12))
    assert set(res.model_version) == {BASELINE_RULES}
    flagged = res.anomalies
    assert flagged and all(a["model_version"] == BASELINE_RULES for a in flagged)
    assert "unchanged" in flagged[0]["causes"][0]["text"]


def test_without_a_model_every_reading_is_judged_by_the_rules():
    engine = DetectionEngine(None)
    ts = T0 + 3_600_000 * np.arange(1, 50)
    kwh = np.r_[noisy_pattern(1), np.full(25, 0.5123)]
    res = engine.score(batch(["m"] * 49, ts, kwh, np.full(49, 3600)))
    assert engine.model_version == BASELINE_RULES and set(res.model_version) == {BASELINE_RULES}
    assert res.flag.any()  # a register that never changes is stuck, model or not
