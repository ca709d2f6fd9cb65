"""The fleet's clock: one time zone and holiday country for detection and forecasting, checked early."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from forecaster.settings import ForecastSettings
from foundation.fleet_clock import FleetClock


def test_defaults_are_utc_without_holidays(monkeypatch):
    monkeypatch.delenv("WATTSUP_FLEET_TIMEZONE", raising=False)
    monkeypatch.delenv("WATTSUP_FLEET_COUNTRY", raising=False)
    assert FleetClock(_env_file=None) == FleetClock(timezone="UTC", country=None)


@pytest.mark.parametrize("field, value, message", [
    ("timezone", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ("country", "XX", "no public holidays known for country 'XX'"),
])
def test_a_bad_setting_names_what_is_wrong(field, value, message):
    with pytest.raises(ValidationError, match=message):
        FleetClock(**{field: value})


def test_the_forecaster_follows_the_fleet_clock_unless_told_otherwise(monkeypatch):
    monkeypatch.setenv("WATTSUP_FLEET_TIMEZONE", "Africa/Nairobi")
    monkeypatch.setenv("WATTSUP_FLEET_COUNTRY", "KE")
    settings = ForecastSettings()
    assert (settings.timezone, settings.country_holidays) == ("Africa/Nairobi", "KE")
    monkeypatch.setenv("WATTSUP_FORECAST_TIMEZONE", "Europe/Amsterdam")
    assert ForecastSettings().timezone == "Europe/Amsterdam"
