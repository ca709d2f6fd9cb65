"""The fleet's weather: one outdoor temperature for all its meters, as a village shares its sky.

Daily means follow the season (a cosine over the year, coldest in mid-January) with
day-to-day persistence (an AR(1) process), and each day has a cool night and a warm afternoon.
Heating gas and cooling loads follow it, so their seasons and cold snaps are the fleet's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from foundation.timeutil import DAY_MS


@dataclass(frozen=True)
class Climate:
    """A temperate climate by default: heating from autumn to spring, none in summer."""

    mean_c: float = 11.0
    """Annual mean of the daily mean temperature."""
    seasonal_c: float = 9.0
    """Half the difference between the warmest and the coldest month."""
    daily_range_c: float = 8.0
    """Afternoon maximum minus night minimum."""
    persistence: float = 0.8
    """AR(1) coefficient of day-to-day anomalies: cold snaps last a few days."""
    anomaly_c: float = 2.5
    """Standard deviation of the daily anomaly."""


def daily_anomalies(days: np.ndarray, climate: Climate, seed: int) -> np.ndarray:
    """The AR(1) anomaly (degrees) of each day number (days since 1970), the same for a day whatever
    block asks: each day's innovation is drawn from (seed, day)."""
    first, last = int(days.min()), int(days.max())
    span = np.arange(first - 30, last + 1)  # 30 days of burn-in make the start of a run ordinary
    innovations = np.array([np.random.default_rng([seed, 7, int(d) & 0x7FFFFFFF]).standard_normal() for d in span])
    scale = climate.anomaly_c * np.sqrt(1 - climate.persistence ** 2)
    values = np.empty(len(span))
    level = 0.0
    for i, e in enumerate(innovations):
        level = climate.persistence * level + scale * e
        values[i] = level
    return values[days - span[0]]


def temperature_c(times: pd.DatetimeIndex, climate: Climate, seed: int) -> np.ndarray:
    """Outdoor temperature (degrees C) at each time (UTC; local time of day is taken as UTC's)."""
    days = times.as_unit("ms").asi8 // DAY_MS
    day_of_year = np.asarray(times.day_of_year, dtype=float)
    hour = np.asarray(times.hour + times.minute / 60.0, dtype=float)
    season = climate.mean_c - climate.seasonal_c * np.cos(2 * np.pi * (day_of_year - 15.0) / 365.25)
    diurnal = -0.5 * climate.daily_range_c * np.cos(2 * np.pi * (hour - 3.0) / 24.0)  # coldest at 03:00
    return season + diurnal + daily_anomalies(days, climate, seed)
