"""Kinds of meter a fleet holds, each with the habits that make real fleets hard to judge.

* ``household``, ``institution``: the original rural fleet (evening peaks; weekday plateaus).
* ``heating_gas``: gas for heating, driven by the outdoor temperature, zero all summer, read from
  an integer register (whole cubic metres), so at low load the same value repeats for hours.
* ``irrigation``: a pump on a schedule in the growing season (mornings and evenings, most days),
  off for the rest of the year.
* ``commercial``: opening hours, closed on Sundays and public holidays, cooling in hot weather;
  some buildings change level for good (new equipment, new hours) within the run.
* ``household_ev``: a household that charges an electric car on some nights: large night loads
  that are its normal.
* ``solar_prosumer``: a household with rooftop solar, metered net: readings fall to zero and
  below (export) around noon on sunny days.
* ``headend_gaps``: households behind a head-end that loses its link for hours at a time and
  then delivers the missed energy in one catch-up reading per meter.

Demand is in kW; the fleet turns it into energy per interval. Each archetype lists the anomaly
kinds that are meaningful for it (a pump has no "drift", a gas meter no "high load" at night).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOUSEHOLD, INSTITUTION, HEATING_GAS, IRRIGATION, COMMERCIAL, HOUSEHOLD_EV, SOLAR_PROSUMER, HEADEND_GAPS = (
    "household", "institution", "heating_gas", "irrigation", "commercial", "household_ev", "solar_prosumer",
    "headend_gaps")
ARCHETYPES = (HOUSEHOLD, INSTITUTION, HEATING_GAS, IRRIGATION, COMMERCIAL, HOUSEHOLD_EV, SOLAR_PROSUMER,
              HEADEND_GAPS)
MIXED_FLEET = ((HOUSEHOLD, 0.25), (INSTITUTION, 0.05), (HEATING_GAS, 0.15), (IRRIGATION, 0.1), (COMMERCIAL, 0.15),
               (HOUSEHOLD_EV, 0.1), (SOLAR_PROSUMER, 0.1), (HEADEND_GAPS, 0.1))
"""Feeder shares of ``--archetypes mixed``: every archetype, households the most common."""


def parse_archetypes(text: str) -> tuple[tuple[str, float], ...] | None:
    """The ``--archetypes`` option: ``original`` (the households and institutions of the original
    simulator: None), ``mixed`` (:data:`MIXED_FLEET`) or ``name[:share],...`` (shares default to
    equal and need not add up to one). A clear error names what is wrong."""
    text = text.strip().lower()
    if text in ("", "original"):
        return None
    if text == "mixed":
        return MIXED_FLEET
    pairs = []
    for part in text.split(","):
        name, _, share = part.strip().partition(":")
        if name not in ARCHETYPES:
            raise ValueError(f"unknown archetype {name!r}; known: original, mixed, {', '.join(ARCHETYPES)}")
        try:
            weight = float(share) if share else 1.0
        except ValueError:
            raise ValueError(f"share of {name!r} must be a number, got {share!r}") from None
        if not weight > 0:
            raise ValueError(f"share of {name!r} must be positive, got {share!r}")
        pairs.append((name, weight))
    return tuple(pairs)

KINDS_BY_ARCHETYPE: dict[str, tuple[str, ...]] = {
    HOUSEHOLD: ("spike", "high_load", "outage", "stuck", "drift"),
    INSTITUTION: ("spike", "high_load", "outage", "stuck", "drift"),
    HEATING_GAS: ("spike", "outage", "stuck"),
    IRRIGATION: ("high_load", "stuck"),
    COMMERCIAL: ("spike", "high_load", "outage", "stuck", "level_shift"),
    HOUSEHOLD_EV: ("spike", "high_load", "outage", "stuck", "drift"),
    SOLAR_PROSUMER: ("spike", "high_load", "outage", "stuck"),
    HEADEND_GAPS: ("spike", "outage", "stuck", "catch_up"),
}
QUANTUM_M3 = 1.0
"""Resolution of the heating-gas register: whole cubic metres."""


@dataclass(frozen=True)
class Traits:
    """Per-meter traits of one archetype group, drawn once from the seed."""

    scale: np.ndarray
    """kW (or m3/h for gas) of the archetype's typical demand."""
    noise: np.ndarray
    """Multiplicative noise (sigma of a lognormal)."""
    shift_h: np.ndarray
    """Hours each meter's habits are shifted by."""
    extra: np.ndarray
    """An archetype's own trait: open hour (commercial), season start (irrigation), kWp (solar), ..."""


def draw_traits(archetype: str, n: int, rng: np.random.Generator) -> Traits:
    """Traits of ``n`` meters of one archetype."""
    if archetype == HEATING_GAS:
        scale = rng.lognormal(np.log(0.15), 0.4, n)  # m3/h per degree of heating demand
        extra = (rng.random(n) < 0.6).astype(float)  # 1: also heats water (a morning and evening draw)
        return Traits(scale, rng.uniform(0.10, 0.2, n), rng.normal(0, 0.5, n), extra)
    if archetype == IRRIGATION:
        scale = rng.lognormal(np.log(4.0), 0.4, n)  # pump kW
        extra = rng.uniform(95, 125, n)  # first day of the growing season (day of year)
        return Traits(scale, rng.uniform(0.02, 0.05, n), rng.normal(0, 0.7, n), extra)
    if archetype == COMMERCIAL:
        scale = rng.lognormal(np.log(25.0), 0.7, n)
        extra = (rng.random(n) < 0.3).astype(float)  # 1: also open on Saturday mornings
        return Traits(scale, rng.uniform(0.04, 0.09, n), rng.normal(0, 0.6, n), extra)
    if archetype == SOLAR_PROSUMER:
        scale = rng.lognormal(np.log(0.5), 0.4, n)
        extra = rng.lognormal(np.log(3.5), 0.3, n)  # kWp of the panels
        return Traits(scale, rng.uniform(0.10, 0.2, n), rng.normal(0, 0.6, n), extra)
    if archetype == INSTITUTION:
        return Traits(rng.lognormal(np.log(6.0), 0.6, n), rng.uniform(0.05, 0.12, n), rng.normal(0, 0.6, n),
                      np.zeros(n))
    # households, with or without a car, behind any head-end
    return Traits(rng.lognormal(np.log(0.45), 0.5, n), rng.uniform(0.10, 0.22, n), rng.normal(0, 0.6, n),
                  np.zeros(n))


def household_kw(hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """Relative household demand: base load, a morning and a stronger evening peak."""
    morning_center = np.where(weekend, 9.0, 7.0)
    morning = 0.9 * np.exp(-0.5 * ((hour - morning_center) / 1.1) ** 2)
    evening = 1.6 * np.exp(-0.5 * ((hour - 19.5) / 1.6) ** 2)
    midday = np.where(weekend, 0.5, 0.15) * np.exp(-0.5 * ((hour - 13.0) / 2.5) ** 2)
    return 0.35 + morning + evening + midday


def institution_kw(hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """Relative institution demand: a weekday daytime plateau, quiet nights and weekends."""
    open_hours = 1.0 / (1.0 + np.exp(-(hour - 7.5) * 2.5)) * 1.0 / (1.0 + np.exp((hour - 17.5) * 2.5))
    return 0.25 + np.where(weekend, 0.15, 1.6) * open_hours


def heating_gas_m3h(hour: np.ndarray, temperature: np.ndarray, scale: np.ndarray, hot_water: np.ndarray) -> np.ndarray:
    """Gas flow (m3/h): heating below 15.5 C (more in the morning and evening), hot water for some."""
    degrees = np.maximum(0.0, 15.5 - temperature)
    comfort = 1.0 + 0.35 * np.exp(-0.5 * ((hour - 7.0) / 1.5) ** 2) + 0.25 * np.exp(-0.5 * ((hour - 19.0) / 2.0) ** 2)
    night_setback = np.where((hour < 5.0) | (hour >= 23.0), 0.6, 1.0)
    draws = hot_water * 0.25 * (np.exp(-0.5 * ((hour - 7.5) / 0.8) ** 2) + np.exp(-0.5 * ((hour - 20.0) / 1.0) ** 2))
    return scale * degrees * comfort * night_setback + draws * np.sqrt(scale / 0.15)


def irrigation_kw(hour: np.ndarray, day_of_year: np.ndarray, season_start: np.ndarray, runs_today: np.ndarray,
                  power: np.ndarray) -> np.ndarray:
    """Pump demand: a morning (05-08) and an evening (18-20) run on the days it runs, in season."""
    in_season = (day_of_year >= season_start) & (day_of_year < season_start + 150)
    scheduled = ((hour >= 5.0) & (hour < 8.0)) | ((hour >= 18.0) & (hour < 20.0))
    return np.where(in_season & scheduled & runs_today, power, 0.0)


def commercial_kw(hour: np.ndarray, weekday: np.ndarray, closed_day: np.ndarray, saturday_open: np.ndarray,
                  temperature: np.ndarray) -> np.ndarray:
    """Relative commercial demand: a base load, open hours (08-18, Saturdays 09-13 for some), cooling."""
    opening = 1.0 / (1.0 + np.exp(-(hour - 8.0) * 3.0)) * 1.0 / (1.0 + np.exp((hour - 18.0) * 3.0))
    saturday = 1.0 / (1.0 + np.exp(-(hour - 9.0) * 3.0)) * 1.0 / (1.0 + np.exp((hour - 13.0) * 3.0))
    is_open = np.where(weekday == 5, saturday * saturday_open, np.where(weekday == 6, 0.0, opening))
    is_open = np.where(closed_day, 0.0, is_open)
    cooling = 0.04 * np.maximum(0.0, temperature - 20.0)
    return 0.3 + is_open * (1.0 + cooling)


def solar_kw(hour: np.ndarray, day_of_year: np.ndarray, kwp: np.ndarray, sunshine: np.ndarray) -> np.ndarray:
    """PV output: a bell over the day (longer days in summer), scaled by the day's sunshine."""
    half_day = 6.0 + 2.0 * np.cos(2 * np.pi * (day_of_year - 172.0) / 365.25)  # 4 h in winter .. 8 h in June
    x = (hour - 12.5) / half_day
    bell = np.where(np.abs(x) < 1.0, np.cos(0.5 * np.pi * x) ** 2, 0.0)
    return kwp * 0.75 * bell * sunshine
