"""A meter's usual usage per slot: the baseline every deviation feature is measured against.

Two exponentially weighted statistics per meter, so they follow the seasons:

* hour of week (168 slots), which knows a school's Saturday from its Monday but takes a week
  to fill;
* hour of day by day type (weekday or weekend, 48 slots), filled within a day.

The baseline blends them by how many observations the hour-of-week slot has (half and half at
:data:`WEEK_SLOT_TRUST` observations). Until a day type has been seen at an hour, the other day
type's hour stands in, then the meter's overall level. Updates are clipped to
:data:`CLIP_SPREADS` spreads, so one anomaly moves the baseline little.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detection.calendar import HOD_SLOTS, Slots
from detection.meter_state import MeterStateStore

WEEK_SLOT_TRUST = 2.0
"""Hour-of-week observations at which that slot and the hour of day weigh the same."""
CLIP_SPREADS = 4.0
"""An update moves a slot's mean by at most this many spreads."""
WEEK_SLOT_MIN_ALPHA = 0.15
DAY_SLOT_MIN_ALPHA = 0.1
"""Smallest weight of a new observation: a slot forgets over about 1/alpha observations (weeks for
the hour of week, days for the hour of day), so the baseline follows the seasons."""
MEAN, VAR, COUNT = 0, 1, 2
"""Fields of a slot's statistics."""


@dataclass
class SlotBaseline:
    """The usual usage of each reading's slot, and how sure of it the meter is."""

    usual: np.ndarray
    """Expected kWh for the reading's interval."""
    spread: np.ndarray
    """Usual deviation from it (kWh), never below 10% of it or 2% of the meter's mean."""
    week_slot_count: np.ndarray
    """Observations of the hour-of-week slot so far."""


def slot_baseline(store: MeterStateStore, rows: np.ndarray, slots: Slots, meter_mean: np.ndarray,
                  meter_var: np.ndarray) -> SlotBaseline:
    """Baseline of each reading (one per row of ``rows``) from its meter's slot statistics."""
    week = store.how[rows, slots.hour_of_week].astype(np.float64)
    day = store.hod[rows, slots.hour_of_day].astype(np.float64)
    other_day_type = store.hod[rows, (slots.hour_of_day + 24) % HOD_SLOTS].astype(np.float64)
    week_weight = week[:, COUNT] / (week[:, COUNT] + WEEK_SLOT_TRUST)
    day_mean = np.where(day[:, COUNT] > 0, day[:, MEAN],
                        np.where(other_day_type[:, COUNT] > 0, other_day_type[:, MEAN], meter_mean))
    day_var = np.where(day[:, COUNT] > 1, day[:, VAR],
                       np.where(other_day_type[:, COUNT] > 1, other_day_type[:, VAR], meter_var))
    usual = np.where(week[:, COUNT] > 0, week_weight * week[:, MEAN] + (1 - week_weight) * day_mean, day_mean)
    var = np.where(week[:, COUNT] > 1, week_weight * week[:, VAR] + (1 - week_weight) * day_var, day_var)
    spread = np.sqrt(var + (0.1 * usual) ** 2 + (0.02 * meter_mean) ** 2) + 1e-9
    return SlotBaseline(usual=usual, spread=spread, week_slot_count=week[:, COUNT])


def update_slots(stats: np.ndarray, rows: np.ndarray, slots: np.ndarray, value: np.ndarray,
                 min_alpha: float, spread: np.ndarray, first_cap: np.ndarray) -> None:
    """Exponentially weighted mean/variance per (row, slot), clipped to :data:`CLIP_SPREADS` spreads.

    A slot's first observation has no spread of its own to be clipped by; it is capped at
    ``first_cap`` (the meter's overall mean plus 4 overall spreads), so an anomaly in a meter's
    first day does not become the baseline its next day is judged against.
    """
    mean = stats[rows, slots, MEAN].astype(np.float64)
    var = stats[rows, slots, VAR].astype(np.float64)
    n = stats[rows, slots, COUNT].astype(np.float64)
    clipped = np.where(n > 0, np.clip(value, mean - CLIP_SPREADS * spread, mean + CLIP_SPREADS * spread),
                       np.minimum(value, first_cap))
    alpha = np.maximum(1.0 / (n + 1.0), min_alpha)
    delta = clipped - mean
    mean = mean + alpha * delta
    var = np.where(n > 0, (1 - alpha) * (var + alpha * delta * delta), 0.0)
    stats[rows, slots, MEAN] = mean
    stats[rows, slots, VAR] = var
    stats[rows, slots, COUNT] = np.minimum(n + 1, 1e6)


def update_baseline(store: MeterStateStore, rows: np.ndarray, slots: Slots, kwh: np.ndarray, spread: np.ndarray,
                    first_cap: np.ndarray) -> None:
    """Move both baselines of ``rows`` (in-order readings only) towards ``kwh``."""
    update_slots(store.how, rows, slots.hour_of_week, kwh, WEEK_SLOT_MIN_ALPHA, spread, first_cap)
    update_slots(store.hod, rows, slots.hour_of_day, kwh, DAY_SLOT_MIN_ALPHA, spread, first_cap)
