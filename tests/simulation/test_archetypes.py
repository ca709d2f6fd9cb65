"""Archetypes: each simulated meter kind shows the property of real fleets it stands for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from simulation.archetypes import ARCHETYPES, KINDS_BY_ARCHETYPE, MIXED_FLEET, parse_archetypes
from simulation.fleet import FleetConfig, simulate_fleet


def fleet(start: datetime, days: int = 14, **kwargs) -> pd.DataFrame:
    return simulate_fleet(FleetConfig(meters=400, days=days, interval=timedelta(hours=1), seed=5,
                                      archetypes=MIXED_FLEET, meters_per_feeder=20, start=start, **kwargs)).readings


@pytest.fixture(scope="module")
def winter() -> pd.DataFrame:
    return fleet(datetime(2026, 1, 5, tzinfo=UTC))


@pytest.fixture(scope="module")
def summer() -> pd.DataFrame:
    return fleet(datetime(2026, 7, 6, tzinfo=UTC))


def normal(frame: pd.DataFrame, archetype: str) -> pd.DataFrame:
    return frame[(frame["archetype"] == archetype) & (frame["label"] == 0)]


def test_every_archetype_is_in_the_mixed_fleet_with_its_own_feeders(winter):
    assert set(winter["archetype"]) == set(ARCHETYPES)
    assert (winter.groupby("feeder_id")["archetype"].nunique() == 1).all()


def test_heating_gas_counts_whole_cubic_metres_and_goes_quiet_in_summer(winter, summer):
    gas_winter, gas_summer = normal(winter, "heating_gas"), normal(summer, "heating_gas")
    assert np.allclose(gas_winter["kwh"], np.round(gas_winter["kwh"]))
    assert (gas_winter["kwh"] == 0).mean() < 0.1
    assert (gas_summer["kwh"] == 0).mean() > 0.5  # the heating is off: zero is normal


def test_irrigation_runs_in_season_only(winter, summer):
    assert (normal(winter, "irrigation")["kwh"] == 0).mean() > 0.95
    assert (normal(summer, "irrigation")["kwh"] > 0).mean() > 0.1


def test_commercial_buildings_keep_opening_hours():
    frame = normal(fleet(datetime(2026, 1, 5, tzinfo=UTC)), "commercial")
    ts = frame["timestamp"] - pd.Timedelta(hours=1)  # the hour the reading covers
    weekday_day = frame[(ts.dt.day_of_week < 5) & ts.dt.hour.between(10, 15)]["kwh"].mean()
    night = frame[ts.dt.hour.between(0, 4)]["kwh"].mean()
    assert weekday_day > 2 * night


def test_commercial_buildings_close_on_public_holidays():
    # Good Friday 2026-04-03 in the Netherlands: a working Friday without a country
    open_ = normal(fleet(datetime(2026, 3, 30, tzinfo=UTC), days=7), "commercial")
    closed = normal(fleet(datetime(2026, 3, 30, tzinfo=UTC), days=7, country="NL"), "commercial")

    def friday_noon(frame: pd.DataFrame) -> float:
        ts = frame["timestamp"] - pd.Timedelta(hours=1)
        return frame[(ts.dt.date == datetime(2026, 4, 3).date()) & ts.dt.hour.between(10, 15)]["kwh"].mean()

    assert friday_noon(closed) < 0.6 * friday_noon(open_)


def test_ev_households_draw_large_loads_at_night_and_prosumers_export_at_noon(summer):
    ev, plain = normal(summer, "household_ev"), normal(summer, "household")
    assert ev["kwh"].quantile(0.99) > 3 * plain["kwh"].quantile(0.99)
    solar = normal(summer, "solar_prosumer")
    hour = (solar["timestamp"] - pd.Timedelta(hours=1)).dt.hour
    assert (solar[hour.between(11, 13)]["kwh"] < 0).mean() > 0.5


def test_a_head_end_delivers_the_gap_as_a_catch_up_reading(winter):
    headend = winter[winter["archetype"] == "headend_gaps"].sort_values(["meter_id", "timestamp"])
    catch_ups = headend[headend["anomaly_kind"] == "catch_up"]
    assert len(catch_ups) > 0
    for _, row in catch_ups.head(5).iterrows():
        own = headend[headend["meter_id"] == row["meter_id"]]
        before = own[own["timestamp"] < row["timestamp"]]["timestamp"].max()
        gap_hours = (row["timestamp"] - before) / pd.Timedelta(hours=1)
        assert gap_hours > 1  # intervals were missing, not read as zero
        typical = own[own["label"] == 0]["kwh"].median()
        assert row["kwh"] > 1.5 * typical  # it carries the missing intervals' energy


def test_each_archetype_has_labelled_anomalies_of_its_own_kinds(winter, summer):
    both = pd.concat([winter, summer])
    for archetype, kinds in KINDS_BY_ARCHETYPE.items():
        seen = set(both[(both["archetype"] == archetype) & (both["label"] == 1)]["anomaly_kind"])
        assert seen and seen <= set(kinds), archetype


@pytest.mark.parametrize("text, expected", [
    ("original", None), ("mixed", MIXED_FLEET), ("heating_gas", (("heating_gas", 1.0),)),
    ("commercial:2, household_ev:1", (("commercial", 2.0), ("household_ev", 1.0))),
])
def test_the_archetypes_option(text, expected):
    assert parse_archetypes(text) == expected


@pytest.mark.parametrize("text, message", [
    ("castle", "unknown archetype 'castle'"), ("commercial:lots", "share of 'commercial' must be a number"),
    ("commercial:0", "share of 'commercial' must be positive"),
])
def test_a_bad_archetypes_option_says_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_archetypes(text)
