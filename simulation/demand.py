"""Normal demand of every meter, without anomalies: the meters' traits and their energy per interval.

Two fleets: the original one (households and institutions, drawn exactly as before, so fleets
other code was tuned on do not change) and the archetype fleet (:mod:`simulation.archetypes`),
where each feeder holds one archetype. Whatever depends on the day (whether a pump runs, a car
charges, the sun shines) is drawn from (seed, day), so a run gives the same day whatever block
it falls in; the gas registers carry their fractions from block to block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from foundation.timeutil import DAY_MS
from simulation.archetypes import (
    COMMERCIAL,
    HEADEND_GAPS,
    HEATING_GAS,
    HOUSEHOLD,
    HOUSEHOLD_EV,
    INSTITUTION,
    IRRIGATION,
    QUANTUM_M3,
    SOLAR_PROSUMER,
    commercial_kw,
    draw_traits,
    heating_gas_m3h,
    household_kw,
    institution_kw,
    irrigation_kw,
    solar_kw,
)
from simulation.weather import temperature_c

EV_NIGHT_SHARE = 0.4
"""Nights a car owner charges."""
EV_CHARGER_KW = 7.2
PUMP_RUN_SHARE = 0.85
"""Days in season an irrigation pump runs (it skips rainy days)."""


@dataclass(frozen=True)
class MeterProfiles:
    """Fixed traits of each meter, drawn once from the seed so every block of an endless run agrees."""

    meter_ids: np.ndarray
    feeder_ids: np.ndarray
    archetype: np.ndarray
    """Archetype name of each meter (object array)."""
    scale: np.ndarray
    noise: np.ndarray
    phase_h: np.ndarray
    extra: np.ndarray
    """The archetype's own trait (see :class:`simulation.archetypes.Traits`)."""

    @property
    def institution(self) -> np.ndarray:
        return self.archetype == INSTITUTION


def original_profiles(meters: int, meters_per_feeder: int, institution_share: float, seed: int) -> MeterProfiles:
    """Households and institutions, drawn as the simulator always has."""
    rng = np.random.default_rng([seed, 0])
    n = meters
    institution = rng.random(n) < institution_share
    scale_kw = np.where(institution, rng.lognormal(np.log(6.0), 0.6, n), rng.lognormal(np.log(0.45), 0.5, n))
    noise = np.where(institution, rng.uniform(0.05, 0.12, n), rng.uniform(0.10, 0.22, n))
    return MeterProfiles(
        meter_ids=np.array([f"M{i:06d}" for i in range(1, n + 1)]),
        feeder_ids=np.array([f"F{i // meters_per_feeder + 1:04d}" for i in range(n)]),
        archetype=np.where(institution, INSTITUTION, HOUSEHOLD).astype(object),
        scale=scale_kw, noise=noise, phase_h=rng.normal(0.0, 0.6, n), extra=np.zeros(n),
    )


def archetype_profiles(meters: int, meters_per_feeder: int, shares: tuple[tuple[str, float], ...],
                       seed: int) -> MeterProfiles:
    """Each feeder one archetype, by the given shares of feeders (largest remainders first)."""
    rng = np.random.default_rng([seed, 0, 1])
    feeders = -(-meters // meters_per_feeder)
    names = [a for a, _ in shares]
    weights = np.array([w for _, w in shares], dtype=float)
    quota = feeders * weights / weights.sum()
    counts = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - counts), kind="stable")[: feeders - counts.sum()]:
        counts[i] += 1
    feeder_archetype = np.repeat(np.array(names, dtype=object), counts)
    rng.shuffle(feeder_archetype)
    feeder_of = np.arange(meters) // meters_per_feeder
    archetype = feeder_archetype[feeder_of]
    scale, noise, phase, extra = (np.zeros(meters) for _ in range(4))
    for k, name in enumerate(names):
        group = archetype == name
        traits = draw_traits(name, int(group.sum()), np.random.default_rng([seed, 0, 2, k]))
        scale[group], noise[group] = traits.scale, traits.noise
        phase[group], extra[group] = traits.shift_h, traits.extra
    return MeterProfiles(
        meter_ids=np.array([f"M{i:06d}" for i in range(1, meters + 1)]),
        feeder_ids=np.array([f"F{i + 1:04d}" for i in feeder_of]),
        archetype=archetype, scale=scale, noise=noise, phase_h=phase, extra=extra,
    )


def original_energy(prof: MeterProfiles, times: pd.DatetimeIndex, interval_seconds: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Energy (kWh) per [step, meter] of the original fleet without anomalies."""
    hours = np.asarray(times.hour + times.minute / 60.0, dtype=float)
    weekend = np.asarray(times.day_of_week >= 5)
    day_of_year = np.asarray(times.day_of_year, dtype=float)
    h = (hours[:, None] + prof.phase_h[None, :]) % 24.0
    wk = np.broadcast_to(weekend[:, None], h.shape)
    shape = np.where(prof.institution[None, :], institution_kw(h, wk), household_kw(h, wk))
    seasonal = 1.0 + 0.15 * np.cos(2 * np.pi * (day_of_year - 15.0) / 365.25)  # winter high
    kw = shape * prof.scale[None, :] * seasonal[:, None]
    noise = rng.lognormal(0.0, 1.0, kw.shape) ** prof.noise[None, :]
    return kw * noise * (interval_seconds / 3600.0)


@dataclass
class DayDraws:
    """Per-day, per-meter chances, drawn from (seed, day) so they do not depend on blocks."""

    days: np.ndarray
    pump_runs: np.ndarray
    sunshine: np.ndarray
    ev_start_h: np.ndarray
    """Hour (after the day's midnight) a car starts charging; NaN on nights it does not."""
    ev_hours: np.ndarray

    @classmethod
    def draw(cls, first_day: int, last_day: int, meters: int, seed: int) -> DayDraws:
        days = np.arange(first_day, last_day + 1)
        rows = []
        for d in days:
            rng = np.random.default_rng([seed, 9, int(d) & 0x7FFFFFFF])
            charges = rng.random(meters) < EV_NIGHT_SHARE
            # One sky over the fleet (a feeder's panels see the same clouds), a little local shade.
            sky = rng.uniform(0.15, 1.0)
            rows.append((rng.random(meters) < PUMP_RUN_SHARE, sky * rng.uniform(0.85, 1.0, meters),
                         np.where(charges, rng.uniform(21.5, 24.5, meters), np.nan),
                         rng.uniform(6.0, 20.0, meters) / EV_CHARGER_KW))
        pump, sun, start, hours = (np.array(x) for x in zip(*rows))
        return cls(days, pump, sun, start, hours)

    def index(self, day: np.ndarray) -> np.ndarray:
        return day - self.days[0]


@dataclass
class ArchetypeDemand:
    """Demand of an archetype fleet, block by block; keeps the gas registers' fractions."""

    profiles: MeterProfiles
    interval_seconds: int
    seed: int
    climate: object
    holidays: set[int] = field(default_factory=set)
    """Day numbers (days since 1970) on which commercial buildings are closed."""
    register_fraction: np.ndarray | None = None

    def energy(self, times: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
        """Energy per [step, meter] (kWh; m3 for gas meters, whole units), without anomalies."""
        prof = self.profiles
        steps, n = len(times), len(prof.meter_ids)
        ms = times.as_unit("ms").asi8
        interval_h = self.interval_seconds / 3600.0
        # the interval's middle: a reading ending at 08:00 of hourly data is the demand of 07:00-08:00
        mid = ms - self.interval_seconds * 500
        hours = ((mid % DAY_MS) / 3_600_000.0)[:, None]
        day = (mid // DAY_MS)[:, None]
        weekday = ((mid // DAY_MS + 3) % 7)[:, None]
        day_of_year = np.asarray(pd.DatetimeIndex(mid.astype("datetime64[ms]")).day_of_year, dtype=float)[:, None]
        temperature = temperature_c(pd.DatetimeIndex(mid.astype("datetime64[ms]")), self.climate, self.seed)[:, None]
        draws = DayDraws.draw(int(day.min()) - 1, int(day.max()), n, self.seed)
        today, yesterday = draws.index(day[:, 0]), draws.index(day[:, 0] - 1)
        h = (hours + prof.phase_h[None, :]) % 24.0
        weekend = weekday >= 5
        kw = np.zeros((steps, n))
        arch = prof.archetype
        scale, extra = prof.scale[None, :], prof.extra[None, :]
        seasonal = 1.0 + 0.15 * np.cos(2 * np.pi * (day_of_year - 15.0) / 365.25)

        homes = np.isin(arch, (HOUSEHOLD, HOUSEHOLD_EV, SOLAR_PROSUMER, HEADEND_GAPS))[None, :]
        kw = np.where(homes, household_kw(h, weekend) * scale * seasonal, kw)
        kw = np.where((arch == INSTITUTION)[None, :], institution_kw(h, weekend) * scale * seasonal, kw)
        closed = np.isin(day, np.fromiter(self.holidays, dtype=np.int64, count=len(self.holidays)))
        kw = np.where((arch == COMMERCIAL)[None, :],
                      commercial_kw(h, weekday, closed, extra > 0, temperature) * scale, kw)
        kw = np.where((arch == HEATING_GAS)[None, :], heating_gas_m3h(h, temperature, scale, extra), kw)
        kw = np.where((arch == IRRIGATION)[None, :],
                      irrigation_kw(h, day_of_year, extra, draws.pump_runs[today], scale), kw)
        noise = rng.lognormal(0.0, 1.0, kw.shape) ** prof.noise[None, :]
        kw = kw * noise
        ev = arch == HOUSEHOLD_EV
        if ev.any():
            charging = self._charging(hours[:, 0], today, yesterday, draws)
            kw = np.where(ev[None, :], kw + charging * EV_CHARGER_KW, kw)
        solar = arch == SOLAR_PROSUMER
        if solar.any():
            pv = solar_kw(hours, day_of_year, extra, draws.sunshine[today])
            kw = np.where(solar[None, :], kw - pv, kw)
        energy = kw * interval_h
        gas = arch == HEATING_GAS
        if gas.any():
            energy[:, gas] = self._register_readings(energy[:, gas], gas)
        return energy

    def typical_level(self, energy: np.ndarray) -> np.ndarray:
        """Each meter's typical absolute energy per interval, what additive anomalies are sized by:
        a pump's own power (it may not have run yet), others' mean over the first block."""
        interval_h = self.interval_seconds / 3600.0
        level = np.maximum(np.abs(energy).mean(axis=0), 1e-3)
        return np.where(self.profiles.archetype == IRRIGATION, self.profiles.scale * interval_h, level)

    @staticmethod
    def _charging(hour: np.ndarray, today: np.ndarray, yesterday: np.ndarray, draws: DayDraws) -> np.ndarray:
        """1 where a car charges: a session starts late evening and may run past midnight."""
        start_today, hours_today = draws.ev_start_h[today], draws.ev_hours[today]
        start_before, hours_before = draws.ev_start_h[yesterday], draws.ev_hours[yesterday]
        h = hour[:, None]
        tonight = (h >= start_today) & (h < start_today + hours_today)
        last_night = (h + 24.0 >= start_before) & (h + 24.0 < start_before + hours_before)
        return (tonight | last_night).astype(float)

    def _register_readings(self, volume: np.ndarray, gas: np.ndarray) -> np.ndarray:
        """Whole units read off a register that counts the cumulative volume: at low flow the same
        value (often zero, sometimes one) repeats for hours."""
        if self.register_fraction is None:
            self.register_fraction = np.random.default_rng([self.seed, 5]).random(len(self.profiles.meter_ids))
        start = self.register_fraction[gas]
        total = start[None, :] + np.cumsum(np.maximum(volume, 0.0), axis=0)
        counted = np.floor(total / QUANTUM_M3)
        readings = np.diff(np.vstack([np.floor(start[None, :] / QUANTUM_M3), counted]), axis=0) * QUANTUM_M3
        self.register_fraction[gas] = total[-1] - counted[-1] * QUANTUM_M3
        return readings
