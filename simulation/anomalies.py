"""Labelled anomalies injected into simulated demand, and the head-end gaps that end in catch-ups.

An event lives in global step indices, so it can continue into later blocks of an endless run.
Its label covers ``length`` intervals; a level shift's effect lasts for good (``effect_end``) but
only its first day is labelled, the time a detector has to notice it.

The original fleet draws its events exactly as it always has. Archetype fleets draw, per meter,
the kinds its archetype lists (:data:`simulation.archetypes.KINDS_BY_ARCHETYPE`), with effects
that mean something for it: spikes and high load are added on the meter's usual level (a net
meter near zero has no level to multiply), gas anomalies are whole units, and a draw that would
not be an anomaly (an outage of a meter already at zero, a stuck value where the meter is
already constant) is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.archetypes import HEATING_GAS, IRRIGATION, KINDS_BY_ARCHETYPE

ANOMALY_KINDS = ("spike", "high_load", "outage", "stuck", "drift")
"""Kinds of the original households and institutions (their order is part of the draws)."""
ALL_KINDS = (*ANOMALY_KINDS, "level_shift", "catch_up")
LEVEL_SHIFT_LABEL_HOURS = 24
FOR_GOOD = 10**12
"""``effect_end`` of a level shift: it never ends."""
GAP_RATE_PER_DAY = 0.15
"""Communication gaps per gappy head-end and day."""


@dataclass(frozen=True)
class Event:
    """One injected anomaly, in global step indices."""

    event_id: str
    meter: int
    kind: int
    """Index into :data:`ALL_KINDS`."""
    start: int
    """Global index of the first affected interval (0 = the interval ending at start + interval)."""
    length: int
    """Labelled intervals."""
    param: float
    """Multiplier (original spike, high_load), added level (archetype spike, high_load), the stuck value,
    the final extra growth (drift) or the level factor (level_shift)."""
    effect_end: int | None = None
    """Global index one past the last affected interval, when the effect outlasts the label."""

    @property
    def end(self) -> int:
        """Global index one past the last labelled interval."""
        return self.start + self.length

    @property
    def name(self) -> str:
        return ALL_KINDS[self.kind]


def event_length(kind: str, per_hour: float, rng: np.random.Generator) -> int:
    if kind == "spike":
        return int(rng.integers(1, 3))
    if kind == "high_load":
        return max(1, int(rng.uniform(2, 8) * per_hour))
    if kind == "outage":
        return max(1, int(rng.uniform(2, 12) * per_hour))
    if kind == "stuck":
        return max(3, int(rng.uniform(3, 24) * per_hour))
    if kind == "level_shift":
        return max(1, int(LEVEL_SHIFT_LABEL_HOURS * per_hour))
    return max(4, int(rng.uniform(24, 72) * per_hour))  # drift: a slow leak over one to three days


def apply_event(event: Event, energy: np.ndarray, kind_of: np.ndarray, event_of: np.ndarray, block_start: int,
                local_index: int, additive: bool = False) -> None:
    """Apply the part of ``event`` that falls in the block starting at global step ``block_start``."""
    effect_end = event.effect_end or event.end
    lo = max(event.start, block_start) - block_start
    hi = min(effect_end, block_start + energy.shape[0]) - block_start
    if hi <= lo:
        return
    seg = energy[lo:hi, event.meter]
    name = event.name
    if name in ("spike", "high_load"):
        if additive:
            seg += event.param
        else:
            seg *= event.param
    elif name == "outage":
        seg[:] = 0.0
    elif name == "stuck":
        seg[:] = event.param
    elif name == "level_shift":
        seg *= event.param
    else:  # drift grows linearly from +25 % to +25 % + param over the whole event, across blocks
        offsets = np.arange(lo, hi) + block_start - event.start
        seg *= 1.25 + event.param * offsets / max(1, event.length - 1)
    labelled_hi = min(event.end, block_start + energy.shape[0]) - block_start
    if labelled_hi > lo:
        kind_of[lo:labelled_hi, event.meter] = event.kind
        event_of[lo:labelled_hi, event.meter] = local_index


def original_param(name: str, energy: np.ndarray, s: int, m: int, last_energy: np.ndarray | None,
                   rng: np.random.Generator) -> float:
    """The original fleet's parameter of an event (draws in their historical order)."""
    if name == "spike":
        return float(rng.uniform(3.0, 8.0))
    if name == "high_load":
        return float(rng.uniform(2.0, 4.0))
    if name == "stuck":
        before = energy[s - 1, m] if s > 0 else (last_energy[m] if last_energy is not None else energy[s, m])
        return round(float(before) + 1e-3, 3)
    if name == "drift":
        return float(rng.uniform(0.6, 1.5))
    return 0.0


def archetype_param(name: str, archetype: str, energy: np.ndarray, s: int, length: int, m: int, level: float,
                    rng: np.random.Generator) -> float | None:
    """An archetype fleet's event parameter, or None when the draw would not be an anomaly there."""
    span = energy[s:s + length, m]
    gas = archetype == HEATING_GAS
    if name == "spike":
        added = float(rng.uniform(3.0, 8.0)) * level
        return float(max(3.0, round(added))) if gas else added
    if name == "high_load":
        if archetype == IRRIGATION:  # the pump left running off its schedule
            return level
        added = float(rng.uniform(1.5, 3.0)) * level
        return float(max(2.0, round(added))) if gas else added
    if name == "outage":
        return 0.0 if (span > 0.05 * level).mean() > 0.5 else None  # a meter mostly at zero anyway: no outage
    if name == "stuck":
        before = energy[s - 1, m] if s > 0 else energy[s, m]
        if len(np.unique(np.round(span, 3))) < 3 or abs(before) < 0.05 * level:
            return None  # already (nearly) constant, or at zero: holding it is no anomaly
        return float(before) if gas else round(float(before) + 1e-3, 3)
    if name == "drift":
        return float(rng.uniform(0.6, 1.5))
    if name == "level_shift":
        return float(rng.uniform(0.5, 0.7)) if rng.random() < 0.5 else float(rng.uniform(1.4, 1.8))
    return None


def archetype_kinds(archetype: str) -> tuple[str, ...]:
    """Kinds drawn at random for an archetype (catch-ups come from gaps, not draws)."""
    return tuple(k for k in KINDS_BY_ARCHETYPE[archetype] if k != "catch_up")


def gaps(steps: int, feeders: int, per_hour: float, steps_per_day: float,
         rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(feeder index, first missing step, first step after the gap) of this block's gaps, each
    2 to 10 hours, ending inside the block so the catch-up reading is in it."""
    out = []
    for f in range(feeders):
        for _ in range(rng.poisson(GAP_RATE_PER_DAY * steps / steps_per_day)):
            length = max(1, int(rng.uniform(2, 10) * per_hour))
            if steps - length - 1 <= 0:
                continue
            start = int(rng.integers(0, steps - length - 1))
            out.append((f, start, start + length))
    return out
