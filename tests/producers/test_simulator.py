"""The simulated fleet looks like real meter data and its labels match what was injected."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from producers.simulator import ANOMALY_KINDS, FleetConfig, iter_fleet_blocks, simulate_fleet


@pytest.fixture(scope="module")
def clean_fleet():
    return simulate_fleet(FleetConfig(meters=200, days=14, interval=timedelta(hours=1), anomaly_rate=0.0,
                                      missing_rate=0.0, late_rate=0.0, seed=3))


def test_size_and_columns(clean_fleet):
    r = clean_fleet.readings
    assert len(r) == 200 * 14 * 24
    assert list(r.columns) == ["timestamp", "meter_id", "feeder_id", "kwh", "interval_seconds", "quality_flags",
                               "label", "anomaly_kind", "event_id"]
    assert str(r["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert (r["kwh"] >= 0).all()
    assert r.groupby("meter_id")["feeder_id"].nunique().max() == 1  # a meter never changes feeder
    assert r["feeder_id"].nunique() == 4  # 50 meters per feeder


def test_households_peak_in_the_evening_and_institutions_on_weekday_daytime(clean_fleet):
    r = clean_fleet.readings.copy()
    r["hour"] = r["timestamp"].dt.hour
    r["weekend"] = r["timestamp"].dt.day_of_week >= 5
    per_meter_mean = r.groupby("meter_id")["kwh"].transform("mean")
    r["rel"] = r["kwh"] / per_meter_mean
    by_hour = r.groupby("hour")["rel"].mean()
    assert by_hour.loc[18:21].mean() > 1.5 * by_hour.loc[1:4].mean()  # evening peak over night
    assert by_hour.loc[6:8].mean() > by_hour.loc[1:4].mean()  # a morning peak
    # Institutions: weekday daytime is far above weekend daytime.
    daytime = r[(r["hour"] >= 10) & (r["hour"] <= 15)]
    ratio = daytime.groupby(["meter_id", "weekend"])["kwh"].mean().unstack()
    weekday_over_weekend = ratio[False] / ratio[True]
    assert (weekday_over_weekend > 3).sum() >= 10  # the institutions
    assert (weekday_over_weekend < 1.5).sum() >= 100  # the households


def test_same_seed_same_fleet_other_seed_differs():
    cfg = FleetConfig(meters=30, days=3, seed=7)
    a, b = simulate_fleet(cfg), simulate_fleet(cfg)
    pd.testing.assert_frame_equal(a.readings, b.readings)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    c = simulate_fleet(FleetConfig(meters=30, days=3, seed=8))
    assert not np.allclose(a.readings["kwh"].to_numpy()[:100], c.readings["kwh"].to_numpy()[:100])


def test_labels_match_injected_anomalies():
    fleet = simulate_fleet(FleetConfig(meters=200, days=14, interval=timedelta(hours=1), anomaly_rate=0.05, seed=11))
    r, labels = fleet.readings, fleet.labels
    assert set(labels["kind"]) == set(ANOMALY_KINDS)
    # Rate roughly honoured: 0.05 events per meter-day; overlapping draws are skipped.
    assert 0.5 * 0.05 * 200 * 14 < len(labels) <= 0.05 * 200 * 14 * 1.3
    for event in labels.itertuples():
        rows = r[(r["meter_id"] == event.meter_id) & (r["timestamp"] >= event.start) & (r["timestamp"] <= event.end)]
        assert (rows["event_id"] == event.event_id).all()
        assert (rows["anomaly_kind"] == event.kind).all()
        assert rows["label"].eq(1).all()
        if event.kind == "outage":
            assert rows["kwh"].eq(0).all()
        if event.kind == "stuck":
            assert rows["kwh"].nunique() == 1
    assert r.loc[r["label"] == 0, "event_id"].eq("").all()
    assert set(r.loc[r["label"] == 1, "event_id"]) == set(labels["event_id"])


def test_missing_and_late_readings():
    fleet = simulate_fleet(FleetConfig(meters=100, days=7, missing_rate=0.01, late_rate=0.01, seed=5))
    r = fleet.readings
    expected = 100 * 7 * 96
    assert 0.98 * expected < len(r) < 0.995 * expected  # about 1% never delivered
    late = r["quality_flags"] == "LATE"
    assert 0.005 < late.mean() < 0.015
    # Late readings are delivered after later readings of the same meter.
    first_late = r[late].iloc[0]
    pos = r.index[late][0]
    earlier_rows = r.loc[: pos - 1]
    same_meter_before = earlier_rows[earlier_rows["meter_id"] == first_late["meter_id"]]
    assert (same_meter_before["timestamp"] > first_late["timestamp"]).any()


def test_endless_blocks_keep_meter_traits():
    blocks = iter_fleet_blocks(FleetConfig(meters=20, days=0, anomaly_rate=0.0, missing_rate=0, late_rate=0))
    first, second = next(blocks), next(blocks)
    assert second.readings["timestamp"].min() == first.readings["timestamp"].max() + pd.Timedelta(minutes=15)
    m1 = first.readings.groupby("meter_id")["kwh"].mean()
    m2 = second.readings.groupby("meter_id")["kwh"].mean()
    assert np.corrcoef(m1, m2)[0, 1] > 0.9  # big meters stay big
