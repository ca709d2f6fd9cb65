"""The simulated fleet looks like real meter data and its labels match what was injected."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from readings.csv_parser import parse_readings_csv
from simulation.fleet import (
    ANOMALY_KINDS,
    READING_COLUMNS,
    FleetConfig,
    SimulatedFleet,
    iter_fleet_blocks,
    simulate_fleet,
)


@pytest.fixture(scope="module")
def clean_fleet():
    return simulate_fleet(FleetConfig(meters=200, days=14, interval=timedelta(hours=1), anomaly_rate=0.0,
                                      missing_rate=0.0, late_rate=0.0, seed=3))


def _check_labels_match_readings(readings: pd.DataFrame, labels: pd.DataFrame) -> None:
    """Every labelled event covers exactly its readings, with its kind, and nothing else is labelled."""
    by_event = readings[readings["event_id"] != ""].groupby("event_id")
    assert set(by_event.groups) <= set(labels["event_id"])
    for event in labels.itertuples():
        rows = readings[(readings["meter_id"] == event.meter_id) & (readings["timestamp"] >= event.start)
                        & (readings["timestamp"] <= event.end)]
        assert (rows["event_id"] == event.event_id).all()
        assert (rows["anomaly_kind"] == event.kind).all()
        assert rows["label"].eq(1).all()
        assert (rows["feeder_id"] == event.feeder_id).all()
        if event.kind == "outage":
            assert rows["kwh"].eq(0).all()
        if event.kind == "stuck":
            assert rows["kwh"].nunique() == 1
    labelled = readings[readings["label"] == 1]
    assert labelled["event_id"].ne("").all() and labelled["anomaly_kind"].ne("").all()
    unlabelled = readings[readings["label"] == 0]
    assert unlabelled["event_id"].eq("").all() and unlabelled["anomaly_kind"].eq("").all()


def test_size_columns_and_ids(clean_fleet):
    r = clean_fleet.readings
    assert len(r) == 200 * 14 * 24
    assert list(r.columns) == list(READING_COLUMNS)
    assert str(r["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert r["timestamp"].min() == pd.Timestamp("2026-03-02T01:00:00Z")  # end of the first interval
    assert (r["kwh"] >= 0).all()
    assert r["interval_seconds"].eq(3600).all()
    assert r.groupby("meter_id")["feeder_id"].nunique().max() == 1  # a meter never changes feeder
    assert r["feeder_id"].nunique() == 4  # 50 meters per feeder
    assert sorted(r["meter_id"].unique())[:2] == ["M000001", "M000002"]
    assert sorted(r["feeder_id"].unique()) == ["F0001", "F0002", "F0003", "F0004"]
    assert r["timestamp"].is_monotonic_increasing  # no late readings: delivery order is time order


def test_households_small_institutions_ten_times_bigger(clean_fleet):
    per_meter = clean_fleet.readings.groupby("meter_id")["kwh"].mean() / 4  # kWh per 15 minutes
    households = per_meter[per_meter < per_meter.quantile(0.8)]
    assert 0.05 < households.median() < 0.5
    assert per_meter.max() > 10 * households.median()


def test_households_peak_in_the_evening_and_institutions_on_weekday_daytime(clean_fleet):
    r = clean_fleet.readings.copy()
    r["hour"] = r["timestamp"].dt.hour
    r["weekend"] = r["timestamp"].dt.day_of_week >= 5
    per_meter_mean = r.groupby("meter_id")["kwh"].transform("mean")
    r["rel"] = r["kwh"] / per_meter_mean
    by_hour = r.groupby("hour")["rel"].mean()
    assert by_hour.loc[18:21].mean() > 1.5 * by_hour.loc[1:4].mean()  # evening peak over night
    assert by_hour.loc[6:8].mean() > by_hour.loc[1:4].mean()  # a morning peak
    assert by_hour.loc[6:8].mean() > by_hour.loc[10:12].mean() * 0.9  # ... that is a peak, not a plateau
    # Institutions: weekday daytime is far above weekend daytime.
    daytime = r[(r["hour"] >= 10) & (r["hour"] <= 15)]
    ratio = daytime.groupby(["meter_id", "weekend"])["kwh"].mean().unstack()
    weekday_over_weekend = ratio[False] / ratio[True]
    assert (weekday_over_weekend > 3).sum() >= 10  # the institutions
    assert (weekday_over_weekend < 1.5).sum() >= 100  # the households


def test_seasonal_drift_winter_above_summer():
    def mean_kwh(start: datetime) -> float:
        cfg = FleetConfig(meters=50, days=7, interval=timedelta(hours=1), start=start, anomaly_rate=0, seed=4)
        return simulate_fleet(cfg).readings["kwh"].mean()

    assert mean_kwh(datetime(2026, 1, 12)) > 1.15 * mean_kwh(datetime(2026, 7, 13))


def test_same_seed_same_fleet_other_seed_differs():
    cfg = FleetConfig(meters=30, days=3, seed=7)
    a, b = simulate_fleet(cfg), simulate_fleet(cfg)
    pd.testing.assert_frame_equal(a.readings, b.readings)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    c = simulate_fleet(FleetConfig(meters=30, days=3, seed=8))
    assert not np.allclose(a.readings["kwh"].to_numpy()[:100], c.readings["kwh"].to_numpy()[:100])


def test_labels_match_injected_anomalies_and_rate_is_honoured():
    fleet = simulate_fleet(FleetConfig(meters=200, days=14, interval=timedelta(hours=1), anomaly_rate=0.05, seed=11))
    r, labels = fleet.readings, fleet.labels
    assert list(labels.columns) == ["event_id", "meter_id", "feeder_id", "kind", "start", "end"]
    assert set(labels["kind"]) == set(ANOMALY_KINDS)
    assert labels["event_id"].is_unique
    expected = 0.05 * 200 * 14  # events per meter-day x meter-days; draws on top of another event are dropped
    assert 0.75 * expected < len(labels) <= 1.25 * expected
    _check_labels_match_readings(r, labels)
    assert set(r.loc[r["label"] == 1, "event_id"]) == set(labels["event_id"])


def test_anomaly_magnitudes_by_kind():
    cfg = {"meters": 200, "days": 14, "interval": timedelta(hours=1), "seed": 11, "missing_rate": 0.0, "late_rate": 0.0}
    clean = simulate_fleet(FleetConfig(**cfg, anomaly_rate=0.0)).readings.set_index(["meter_id", "timestamp"])["kwh"]
    fleet = simulate_fleet(FleetConfig(**cfg, anomaly_rate=0.05))
    r = fleet.readings.set_index(["meter_id", "timestamp"])
    # Same seed: the normal load is drawn first, so the ratio to the clean fleet is the injected factor.
    ratio = (r["kwh"] / clean.reindex(r.index)).groupby(r["event_id"]).agg(["min", "max"])
    kinds = fleet.labels.set_index("event_id")["kind"]
    ratio = ratio.join(kinds, how="inner")
    spikes, high = ratio[ratio["kind"] == "spike"], ratio[ratio["kind"] == "high_load"]
    assert spikes["min"].between(3.0 * 0.999, 8.0 * 1.001).all()
    assert high["min"].between(2.0 * 0.999, 4.0 * 1.001).all()
    drift = ratio[ratio["kind"] == "drift"]
    assert (drift["max"] > drift["min"] + 0.5).all()  # the leak grows
    lengths = ((fleet.labels["end"] - fleet.labels["start"]) / pd.Timedelta(hours=1) + 1).groupby(fleet.labels["kind"])
    assert lengths.max()["spike"] <= 2
    assert lengths.min()["high_load"] >= 2 and lengths.min()["drift"] >= 24


def test_one_day_run_has_every_kind_including_drift():
    fleet = simulate_fleet(FleetConfig(meters=2000, days=1, seed=1))
    labels = fleet.labels
    assert set(labels["kind"]) == set(ANOMALY_KINDS)
    run_end = fleet.readings["timestamp"].max()
    assert (labels["end"] <= run_end).all() and (labels["start"] >= fleet.readings["timestamp"].min()).all()
    assert 0.75 * 0.05 * 2000 < len(labels) <= 1.25 * 0.05 * 2000
    _check_labels_match_readings(fleet.readings, labels)


def test_missing_and_late_readings():
    fleet = simulate_fleet(FleetConfig(meters=100, days=7, missing_rate=0.01, late_rate=0.01, seed=5))
    r = fleet.readings
    expected = 100 * 7 * 96
    assert 0.98 * expected < len(r) < 0.995 * expected  # about 1% never delivered
    assert not r.duplicated(["meter_id", "timestamp"]).any()
    late = r["quality_flags"] == "LATE"
    assert 0.005 < late.mean() < 0.015
    assert set(r["quality_flags"]) == {"", "LATE"}
    # A late reading is delivered with the fleet's readings of 1-6 intervals later (at the very end
    # of the run there are none to come with), so it follows newer readings of its own meter
    # unless those went missing or were late too. On-time readings never come out of order.
    near_end = r["timestamp"] > r["timestamp"].max() - 6 * pd.Timedelta(minutes=15)
    delivered_with = r["timestamp"].cummax()
    delay = (delivered_with - r["timestamp"])[late & ~near_end] / pd.Timedelta(minutes=15)
    assert delay.between(1, 6).all()
    newest_before = r.groupby("meter_id")["timestamp"].cummax().groupby(r["meter_id"]).shift()
    out_of_order = r["timestamp"] < newest_before
    assert out_of_order[late].mean() > 0.95
    assert not out_of_order[~late].any()


@pytest.mark.timing
def test_ten_thousand_meters_for_a_day_in_well_under_a_few_seconds():
    started = time.perf_counter()
    fleet = simulate_fleet(FleetConfig(meters=10_000, days=1))
    elapsed = time.perf_counter() - started
    assert len(fleet.readings) > 0.99 * 960_000
    assert elapsed < 5.0, f"took {elapsed:.1f} s"


def test_endless_blocks_keep_meter_traits_and_time_runs_on():
    blocks = iter_fleet_blocks(FleetConfig(meters=20, days=0, anomaly_rate=0.0, missing_rate=0, late_rate=0))
    first, second = next(blocks), next(blocks)
    assert len(first.readings) == len(second.readings) == 20 * 96
    assert second.readings["timestamp"].min() == first.readings["timestamp"].max() + pd.Timedelta(minutes=15)
    m1 = first.readings.groupby("meter_id")["kwh"].mean()
    m2 = second.readings.groupby("meter_id")["kwh"].mean()
    assert np.corrcoef(m1, m2)[0, 1] > 0.9  # big meters stay big


def test_blocks_carry_events_and_late_readings_across_boundaries():
    cfg = FleetConfig(meters=300, days=6, seed=21, anomaly_rate=0.1, missing_rate=0.0, late_rate=0.05)
    blocks = list(iter_fleet_blocks(cfg, block_days=1.0))
    assert len(blocks) == 6
    readings = pd.concat([b.readings for b in blocks], ignore_index=True)
    labels = pd.concat([b.labels for b in blocks], ignore_index=True)
    # Nothing lost or repeated at the boundaries: every interval of every meter exactly once.
    assert len(readings) == 300 * 6 * 96
    assert not readings.duplicated(["meter_id", "timestamp"]).any()
    # Late readings of a block's last intervals are delivered in the next block, still flagged.
    boundary = blocks[0].readings["timestamp"].max()
    carried = blocks[1].readings[blocks[1].readings["timestamp"] <= boundary]
    assert len(carried) > 0 and carried["quality_flags"].eq("LATE").all()
    # Events started in one block continue into the next (drifts last one to three days).
    block_of_start = labels["start"].dt.floor("D")
    spanning = labels[labels["end"].dt.floor("D") > block_of_start]
    assert (spanning["kind"] == "drift").sum() >= 3
    assert labels["event_id"].is_unique
    assert (labels["end"] <= readings["timestamp"].max()).all()
    _check_labels_match_readings(readings, labels)


def test_label_and_readings_csv_round_trip(tmp_path):
    fleet = simulate_fleet(FleetConfig(meters=40, days=2, seed=2, late_rate=0.02))
    fleet.write_labels(tmp_path / "labels.csv")
    fleet.write_readings_csv(tmp_path / "readings.csv")
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert list(labels.columns) == ["event_id", "meter_id", "feeder_id", "kind", "start", "end"]
    assert len(labels) == len(fleet.labels)
    assert labels["start"].iloc[0].endswith("Z")
    with open(tmp_path / "readings.csv") as f:
        assert f.readline().startswith("timestamp,meter_id,kwh,label,")
    parsed = parse_readings_csv(tmp_path / "readings.csv")
    assert parsed.rejected == []
    assert parsed.readings["kwh"].tolist() == fleet.readings["kwh"].tolist()
    assert parsed.readings["timestamp"].equals(fleet.readings["timestamp"])
    assert parsed.readings["feeder_id"].tolist() == fleet.readings["feeder_id"].tolist()
    assert parsed.readings["quality_flags"].tolist() == fleet.readings["quality_flags"].tolist()
    raw = pd.read_csv(tmp_path / "readings.csv", keep_default_na=False)
    assert raw["label"].tolist() == fleet.readings["label"].tolist()

    # Appending blocks makes one file with one header.
    second = SimulatedFleet(readings=fleet.readings.iloc[:5], labels=fleet.labels.iloc[:2])
    second.write_labels(tmp_path / "labels.csv", append=True)
    assert len(pd.read_csv(tmp_path / "labels.csv")) == len(fleet.labels) + 2


@pytest.mark.parametrize("kwargs, message", [
    ({"meters": 0}, "meters must be at least 1"),
    ({"interval": timedelta(0)}, "interval must be a positive"),
    ({"missing_rate": 1.5}, "missing_rate must be between 0 and 1"),
    ({"days": -1}, "days must be >= 0"),
])
def test_invalid_config_is_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FleetConfig(**kwargs)


def test_endless_config_needs_blocks():
    with pytest.raises(ValueError, match="iter_fleet_blocks"):
        simulate_fleet(FleetConfig(days=0))
