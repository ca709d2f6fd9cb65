"""Simulated fleets the forecaster tests share."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from forecaster.series import MeterSeries, series_from_readings
from simulation.fleet import FleetConfig, simulate_fleet


@pytest.fixture(scope="module")
def hourly_fleet() -> pd.DataFrame:
    """Six meters, a month of hourly readings, no anomalies."""
    return simulate_fleet(FleetConfig(meters=6, days=30, interval=timedelta(hours=1), seed=11, anomaly_rate=0)).readings


@pytest.fixture(scope="module")
def fleet_series() -> list[MeterSeries]:
    """Eight meters' normal usage over three weeks, as series."""
    readings = simulate_fleet(FleetConfig(meters=8, days=21, interval=timedelta(hours=1), seed=21)).readings
    return series_from_readings(readings[readings["label"] == 0], 21 * 86400)  # normal usage only
