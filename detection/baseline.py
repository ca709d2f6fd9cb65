"""A meter's usual usage per slot: the baseline every deviation feature is measured against.

Two exponentially weighted statistics per meter, so they follow the seasons:

* hour of week (168 slots), which knows a school's Saturday from its Monday but takes a week
  to fill;
* hour of day by day type (working day or not, 48 slots), filled within a day; it also keeps
  the share of zero readings of its hour (a solar meter's noon, a pump's idle night) and its
  10% and 90% quantiles, tracked by stochastic approximation: a car charged on four nights in ten
  makes its hour's upper quantile high within days, so the night it charges is not an anomaly,
  while one spike moves a quantile by a single small step.

The baseline blends them by how many observations the hour-of-week slot has (half and half at
:data:`WEEK_SLOT_TRUST` observations). Until a day type has been seen at an hour (a fleet that
starts on a Saturday meets its first Monday), the other day type's hour stands in, converted by
the fleet's day-type profile (:class:`DayTypeProfile`, learnt in training from the whole
population) and with an uncertainty as wide as that profile's spread across meters: what a meter
does on its first working day is judged with what is known of meters like it, not as if its
weekend were its Monday. Updates are clipped to :data:`CLIP_SPREADS` spreads, so one anomaly moves
the baseline little.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detection.calendar import Slots
from detection.meter_state import MeterStateStore, Scalar

WEEK_SLOT_TRUST = 2.0
"""Hour-of-week observations at which that slot and the hour of day weigh the same."""
DAY_TYPE_TRUST = 4.0
"""Hours of its own at which an hour of a day type weighs as much as the other day type's converted:
four working days, one day's readings being one observation of that day type, not four."""
CLIP_SPREADS = 4.0
"""An update moves a slot's mean by at most this many spreads."""
VAR_CLIP_SPREADS = 2.5
"""Deviations enter a slot's variance clipped to this many spreads: for normal variation that keeps
98% of the variance (E[min(z^2, 2.5^2)] = 0.977), for an anomaly it bounds what one hour can add."""
PRIOR_OBSERVATIONS = 2.0
"""Observations' worth of weight the meter's overall variance keeps in a slot's variance: a slot seen
twice is half sure of its own spread."""
WEEK_SLOT_MIN_ALPHA = 0.15
DAY_SLOT_MIN_ALPHA = 0.1
"""Smallest weight of a new observation: a slot forgets over about 1/alpha observations (weeks for
the hour of week, days for the hour of day), so the baseline follows the seasons."""
RELATIVE_SPREAD_FLOOR = 0.1
"""A slot's spread is never below a tenth of its usual usage: meters vary at least that much."""
LEVEL_SPREAD_FLOOR = 0.02
"""Nor below 2% of the meter's level: a near-zero slot of a busy meter is not judged by hundredths."""
QUANTILE_STEP = 0.5
"""A quantile moves by this share of its tail's width per hour of readings: up by 90% of it (or of the
excess) past the 90% quantile, down by 10% otherwise, so it settles where one reading in ten lies
beyond; the 10% quantile likewise, mirrored, without the excess."""
QUANTILE_MIN_COUNT = 3
"""Readings a slot needs before its quantiles mean anything."""
TAIL_TRUST = 8.0
"""Observations (hours) of its own an hour-of-day slot needs before its day type's tails alone count:
about two weekends' days, or eight working days."""
TAIL_Z = 1.2816
"""Spreads between a normal distribution's mean and its 90% quantile: a quantile's distance over this
is the spread it implies."""
CONVERSION_Z = 1.96
"""Spreads between a normal distribution's mean and its 97.5% quantile (the day-type profile's range)."""
MEAN, VAR, COUNT, ZERO_SHARE, Q_HIGH, Q_LOW = 0, 1, 2, 3, 4, 5
"""Fields of a slot's statistics (the last three in the hour-of-day table only). COUNT is in hours
of observation (four 15-minute readings make one), so every constant below means the same for
meters read every 15 minutes, every hour or every day."""


@dataclass(frozen=True)
class DayTypeProfile:
    """Working day over non-working day usage, per hour of the day, across a population of meters.

    ``ratio[h]`` converts a non-working day's hour-``h`` usage into a working day's (the population's
    median); ``low[h]`` and ``high[h]`` are its 2.5% and 97.5% quantiles across meters (the range
    nearly every meter lies in, :data:`CONVERSION_Z` spreads either side): households leave
    for work while schools open, so a meter's first Monday morning may be a fraction of its weekend's
    or several times it. The default knows nothing: ratio 1, anywhere from half to twice.
    """

    ratio: np.ndarray = field(default_factory=lambda: np.ones(24))
    low: np.ndarray = field(default_factory=lambda: np.full(24, 0.5))
    high: np.ndarray = field(default_factory=lambda: np.full(24, 2.0))

    def as_record(self) -> dict[str, list[float]]:
        return {name: [round(float(x), 4) for x in getattr(self, name)] for name in ("ratio", "low", "high")}

    @classmethod
    def from_record(cls, record: dict[str, list[float]] | None) -> DayTypeProfile:
        if not record:
            return cls()
        return cls(*(np.asarray(record[name], dtype=float) for name in ("ratio", "low", "high")))

    def conversion(self, hour: np.ndarray, working: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(median, 2.5%, 97.5%) factors from the other day type's usage to this one's, per reading."""
        ratio, low, high = self.ratio[hour], self.low[hour], self.high[hour]
        inverse = lambda x: 1.0 / np.maximum(x, 1e-3)  # noqa: E731 - non-working from working
        return (np.where(working, ratio, inverse(ratio)), np.where(working, low, inverse(high)),
                np.where(working, high, inverse(low)))


UNKNOWN_DAY_TYPES = DayTypeProfile()

FLEET_TAIL_QUANTILE = 99.5
"""The fleet's upper tail is its readings' 99.5% quantile at each hour: what one reading in two hundred
of the fleet's does there. A car on the charger in a tenth of households on a third of nights is
well inside it; single faults, a few in a thousand readings spread over all hours, barely move it."""
FLEET_TAIL_MIN_READINGS = 400
"""Readings an hour needs before its 99.5% quantile means anything (two of them beyond it)."""


@dataclass
class FleetTails:
    """How far above their usual the fleet's readings go at each hour (local time) beyond what they do at
    any hour: the upper tail (:data:`FLEET_TAIL_QUANTILE`) of (usage - usual) / the meter's level, across
    a population of meters, less its median over the hours.

    A meter in its first week has not shown its habits yet; the fleet's meters have. Where the fleet's
    households charge cars at midnight, a young meter's first 7 kWh midnight is what its neighbours
    do, not a spike; at noon, where nobody draws such loads, the same reading still is one. What every
    hour shows (a household's ordinary ups and downs) is left to the meter's own spreads, which it
    learns within days. Zero where unknown: too few readings, or a model trained before tails were learnt.
    """

    upper: np.ndarray = field(default_factory=lambda: np.zeros(24))

    def as_record(self) -> dict[str, list[float]]:
        return {"upper": [round(float(x), 4) for x in self.upper]}

    @classmethod
    def from_record(cls, record: dict[str, list[float]] | None) -> FleetTails:
        return cls(np.asarray(record["upper"], dtype=float)) if record else cls()

    @classmethod
    def from_readings(cls, hour: np.ndarray, excess: np.ndarray) -> FleetTails:
        """Tails of ``excess`` ((usage - usual) / level per reading) by local ``hour`` (0..23)."""
        tail = np.full(24, np.nan)
        for h in range(24):
            values = excess[(hour == h) & np.isfinite(excess)]
            if len(values) >= FLEET_TAIL_MIN_READINGS:
                tail[h] = np.percentile(values, FLEET_TAIL_QUANTILE)
        if np.isnan(tail).all():
            return cls()
        return cls(np.nan_to_num(np.maximum(tail - np.nanmedian(tail), 0.0)))


UNKNOWN_FLEET_TAILS = FleetTails()


@dataclass
class SlotBaseline:
    """The usual usage of each reading's slot, and how sure of it the meter is."""

    usual: np.ndarray
    """Expected kWh for the reading's interval."""
    spread: np.ndarray
    """Usual deviation from it (kWh), floored (see the module's constants and the register's resolution)."""
    spread_up: np.ndarray
    spread_down: np.ndarray
    """The spread above and below the usual: wider where the hour's quantiles say so."""
    low_quantile: np.ndarray
    """The hour's 10% quantile (+inf until it has a few readings)."""
    week_slot_count: np.ndarray
    """Observations of the hour-of-week slot so far."""
    observations: np.ndarray
    """Hours of observation of the slot: how well the spread is known."""
    borrowed: np.ndarray
    """Share of the usual taken from the other day type's hour (0 once the meter knows this one)."""
    zero_share: np.ndarray
    """Share of zero readings in the hour of day so far (NaN before its first observation)."""
    day_type_seen: np.ndarray
    """Whether the meter has seen this day type at this hour."""


def slot_baseline(store: MeterStateStore, rows: np.ndarray, slots: Slots, meter_mean: np.ndarray,
                  meter_var: np.ndarray, level: np.ndarray, quantum: np.ndarray,
                  profile: DayTypeProfile = UNKNOWN_DAY_TYPES) -> SlotBaseline:
    """Baseline of each reading (one per row of ``rows``) from its meter's slot statistics."""
    factor = level_factor(store, rows)
    week = _at_level(store.how[rows, slots.hour_of_week], factor)
    day = _at_level(store.hod[rows, slots.hour_of_day], factor)
    other_type = (slots.hour_of_day + 24) % 48
    other = _at_level(store.hod[rows, other_type], factor)
    seen = day[:, COUNT] > 0
    hour = slots.hour_of_day % 24
    # The other day type's hour, converted by the fleet's profile, stands in for this one until the
    # meter has DAY_TYPE_TRUST hours of its own here, and carries the population's disagreement.
    ratio, ratio_low, ratio_high = profile.conversion(hour, slots.hour_of_day < 24)
    convertible = other[:, COUNT] > 0
    converted = other[:, MEAN] * ratio
    own_weight = np.where(convertible, day[:, COUNT] / (day[:, COUNT] + DAY_TYPE_TRUST), 1.0)
    day_mean = np.where(seen, own_weight * day[:, MEAN] + (1 - own_weight) * converted,
                        np.where(convertible, converted, meter_mean))
    day_var = np.where(day[:, COUNT] > 1, day[:, VAR], np.where(other[:, COUNT] > 1, other[:, VAR] * ratio**2, meter_var))
    week_weight = week[:, COUNT] / (week[:, COUNT] + WEEK_SLOT_TRUST)
    usual = np.where(week[:, COUNT] > 0, week_weight * week[:, MEAN] + (1 - week_weight) * day_mean, day_mean)
    var = np.where(week[:, COUNT] > 1, week_weight * week[:, VAR] + (1 - week_weight) * day_var, day_var)
    # Honest uncertainty: a slot seen a few times has a mean and a spread of its own only as good as
    # its few observations; until then the meter's overall variance weighs in (PRIOR_OBSERVATIONS).
    observed = np.maximum(day[:, COUNT], week[:, COUNT])  # the same readings feed both
    var = (observed * var + PRIOR_OBSERVATIONS * meter_var) / (observed + PRIOR_OBSERVATIONS)
    # And while the conversion stands in: as far up and down as meters disagree about it.
    borrowed = np.where(convertible, (1 - own_weight) * (1 - week_weight), 0.0)
    conversion_up = borrowed * np.abs(other[:, MEAN]) * np.maximum(ratio_high - ratio, 0.0)
    conversion_down = borrowed * np.abs(other[:, MEAN]) * np.maximum(ratio - ratio_low, 0.0)
    var = var + ((conversion_up + conversion_down) / (2 * CONVERSION_Z)) ** 2
    spread = np.sqrt(var + (RELATIVE_SPREAD_FLOOR * usual) ** 2 + (LEVEL_SPREAD_FLOOR * level) ** 2
                     + (0.5 * quantum) ** 2) + 1e-9
    zero_share = np.where(seen, day[:, ZERO_SHARE], np.where(other[:, COUNT] > 0, other[:, ZERO_SHARE], np.nan))
    # The hour's tails, and its neighbours' (habits shift by an hour: a car put on the charger
    # at 22:00 one night and 23:00 the next), once each has a few readings.
    above, below = _neighbour_tails(store, rows, slots.hour_of_day, factor)
    spread_up = np.maximum(spread, np.maximum(above / TAIL_Z, conversion_up / CONVERSION_Z))
    spread_down = np.maximum(spread, np.maximum(below / TAIL_Z, conversion_down / CONVERSION_Z))
    own = day[:, COUNT] >= QUANTILE_MIN_COUNT
    low = np.where(own, day[:, Q_LOW], np.inf)
    return SlotBaseline(usual=usual, spread=spread, spread_up=spread_up, spread_down=spread_down, low_quantile=low,
                        week_slot_count=week[:, COUNT], observations=observed, borrowed=borrowed, zero_share=zero_share,
                        day_type_seen=seen | (week[:, COUNT] > 0))


def level_factor(store: MeterStateStore, rows: np.ndarray) -> np.ndarray:
    """The meter's level since its last confirmed level shift, over the level its slots were learnt at."""
    return np.exp(store.scalars[rows, Scalar.LOG_LEVEL])


def _at_level(stats: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Slot statistics (float64 copies) at the meter's current level: means and quantiles times the
    factor, variances times its square."""
    out = stats.astype(np.float64)
    out[:, MEAN] *= factor
    out[:, VAR] *= factor**2
    if out.shape[1] > Q_LOW:
        out[:, Q_HIGH] *= factor
        out[:, Q_LOW] *= factor
    return out


def _neighbour_tails(store: MeterStateStore, rows: np.ndarray, hod: np.ndarray,
                     factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far the 90% quantile lies above its hour's mean, and the 10% quantile below, for an
    hour-of-day slot and the hours either side of it (same day type): the widest of those with at
    least :data:`QUANTILE_MIN_COUNT` readings (0 where none has). Tails, not levels: an evening
    ramp's neighbouring hour is lower, not wider. Until the reading's own hour has
    :data:`TAIL_TRUST` observations, the other day type's tails count too: a car charged on
    weeknights is charged on a meter's first Saturday night as well."""
    day_type = (hod // 24) * 24
    own = store.hod[rows, hod, COUNT] >= TAIL_TRUST
    above = np.zeros(len(rows))
    below = np.zeros(len(rows))
    for offset in (-1, 0, 1):
        for other_type in (False, True):
            base = (day_type + 24) % 48 if other_type else day_type
            slot = base + (hod % 24 + offset) % 24
            stats = _at_level(store.hod[rows, slot], factor)
            known = (stats[:, COUNT] >= QUANTILE_MIN_COUNT) & ~(own & other_type)
            above = np.where(known, np.maximum(above, stats[:, Q_HIGH] - stats[:, MEAN]), above)
            below = np.where(known, np.maximum(below, stats[:, MEAN] - stats[:, Q_LOW]), below)
    return above, below


def update_slots(stats: np.ndarray, rows: np.ndarray, slots: np.ndarray, value: np.ndarray,
                 min_alpha: float, spread: np.ndarray, first_cap: np.ndarray, weight: np.ndarray) -> None:
    """Exponentially weighted mean/variance per (row, slot), clipped to :data:`CLIP_SPREADS` spreads,
    and, where the table keeps it, the share of zero readings and the 10%/90% quantiles.

    ``weight`` is the share of the slot's hour a reading covers (1 for hourly and longer readings,
    0.25 for 15-minute ones): a slot learns per hour of a day, not per reading, so a 15-minute
    meter's baseline forgets as slowly as an hourly one's and one unusual hour (a holiday
    morning) moves it as much, not four times as much.

    A slot's first observation has no spread of its own to be clipped by; it is capped at
    ``first_cap`` (the meter's overall mean plus 4 overall spreads), so an anomaly in a meter's
    first day does not become the baseline its next day is judged against.
    """
    mean = stats[rows, slots, MEAN].astype(np.float64)
    var = stats[rows, slots, VAR].astype(np.float64)
    n = stats[rows, slots, COUNT].astype(np.float64)
    clipped = np.where(n > 0, np.clip(value, mean - CLIP_SPREADS * spread, mean + CLIP_SPREADS * spread),
                       np.minimum(value, first_cap))
    # ``n`` counts hours of observation: w / (n + w) is an equal-weight running mean of what has
    # been seen until the slot's memory (min_alpha per hour) takes over.
    alpha = np.maximum(weight / (n + weight), 1.0 - (1.0 - min_alpha) ** weight)
    delta = clipped - mean
    mean = mean + alpha * delta
    # The variance learns from deviations clipped tighter still (a Huber-style bound): a holiday or an
    # outage adds at most VAR_CLIP_SPREADS^2 of the slot's variance per hour, not weeks of inflation.
    bounded = np.clip(delta, -VAR_CLIP_SPREADS * spread, VAR_CLIP_SPREADS * spread)
    var = np.where(n > 0, (1 - alpha) * (var + alpha * bounded * bounded), 0.0)
    stats[rows, slots, MEAN] = mean
    stats[rows, slots, VAR] = var
    stats[rows, slots, COUNT] = np.minimum(n + weight, 1e6)
    if stats.shape[2] > ZERO_SHARE:
        share = stats[rows, slots, ZERO_SHARE].astype(np.float64)
        is_zero = (np.abs(value) <= 1e-9).astype(np.float64)
        stats[rows, slots, ZERO_SHARE] = share + alpha * (is_zero - share)
        high = stats[rows, slots, Q_HIGH].astype(np.float64)
        low = stats[rows, slots, Q_LOW].astype(np.float64)
        # Steps scale with the tail's own width (at least the slot's spread), and past the upper
        # quantile with the excess: a load added out of habit (a car on the charger, a pump) is learnt
        # within days, one spike's mark fades within a couple of weeks. The lower quantile takes steps
        # of its width only: usage falls short for a reason (a holiday, a fault), not by habit, and a
        # holiday week must not widen a building's working hours for a month.
        width_high = np.maximum(spread, high - mean)
        width_low = np.maximum(spread, mean - low)
        step = QUANTILE_STEP * weight
        high = np.where(value > high, high + 0.9 * step * np.maximum(width_high, value - high),
                        high - 0.1 * step * width_high)
        low = np.where(value < low, low - 0.9 * step * width_low, low + 0.1 * step * width_low)
        high = np.where(n > 0, np.maximum(high, mean), value)
        low = np.where(n > 0, np.minimum(low, mean), value)
        stats[rows, slots, Q_HIGH] = high
        stats[rows, slots, Q_LOW] = low


def update_baseline(store: MeterStateStore, rows: np.ndarray, slots: Slots, kwh: np.ndarray, spread: np.ndarray,
                    first_cap: np.ndarray, interval_s: np.ndarray) -> None:
    """Move both baselines of ``rows`` (in-order readings only) towards ``kwh``, which are learnt at the
    level the slots were first learnt at (see :func:`level_factor`)."""
    weight = np.minimum(np.asarray(interval_s, dtype=np.float64) / 3600.0, 1.0)
    factor = level_factor(store, rows)
    value, spread, first_cap = kwh / factor, spread / factor, first_cap / factor
    update_slots(store.how, rows, slots.hour_of_week, value, WEEK_SLOT_MIN_ALPHA, spread, first_cap, weight)
    update_slots(store.hod, rows, slots.hour_of_day, value, DAY_SLOT_MIN_ALPHA, spread, first_cap, weight)
