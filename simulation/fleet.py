"""A simulated smart-meter fleet with labelled anomalies, for demos, tests and evaluation.

Load shapes follow what rural distribution data looks like: households with a morning and a
stronger evening peak, institutions (schools, clinics, shops) with a weekday daytime plateau
and quiet weekends, a slow seasonal swing, per-meter scale and multiplicative noise. Anomalies
of five kinds are injected at a chosen rate and written as ground-truth events, so detection
quality can be measured rather than asserted. Everything is vectorised with numpy and
deterministic under the seed: 10,000 meters x 1 day of 15-minute data takes well under a second.

``FleetConfig.archetypes`` adds the meters that make real fleets hard (heating gas, irrigation
pumps, commercial buildings, electric cars, solar, a head-end with communication gaps: see
:mod:`simulation.archetypes`), each feeder of one archetype; without it the fleet is the original
households and institutions, reading for reading.

The fleet is generated in blocks of time steps (:class:`FleetSimulator`), so an endless,
paced demo never holds more than one block in memory. Whatever crosses a block boundary is
carried over rather than cut: an anomaly that started in one block continues in the next (a
drift grows over days, whatever the block size), and a reading delivered late is held back
until the block in which it is actually delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from foundation.timeutil import datetime_ms, utc_index
from simulation.anomalies import (
    ALL_KINDS,
    ANOMALY_KINDS,
    FOR_GOOD,
    Event,
    apply_event,
    archetype_kinds,
    archetype_param,
    event_length,
    gaps,
    original_param,
)
from simulation.archetypes import ARCHETYPES, HEADEND_GAPS
from simulation.demand import ArchetypeDemand, archetype_profiles, original_energy, original_profiles
from simulation.weather import Climate

log = logging.getLogger(__name__)

DEFAULT_START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
LATE_FLAG = "LATE"
CSV_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

READING_COLUMNS = ("timestamp", "meter_id", "feeder_id", "kwh", "interval_seconds", "quality_flags",
                   "label", "anomaly_kind", "event_id", "archetype")
LABEL_COLUMNS = ("event_id", "meter_id", "feeder_id", "kind", "start", "end")
READINGS_CSV_COLUMNS = ("timestamp", "meter_id", "kwh", "label", "feeder_id", "interval_seconds",
                        "anomaly_kind", "event_id", "quality_flags", "archetype")
"""The evaluator's columns first (``timestamp,meter_id,kwh,label``), then what replay needs."""

_MAX_LATE_INTERVALS = 6


@dataclass(frozen=True)
class FleetConfig:
    """What fleet to simulate; the same config (seed included) always gives the same fleet."""

    meters: int = 100
    interval: timedelta = timedelta(minutes=15)
    """Metering interval (a ``pandas.Timedelta`` works too)."""
    days: float = 1.0
    """Simulated days; 0 means endless (only :func:`iter_fleet_blocks` can run that)."""
    start: datetime = DEFAULT_START
    """Start of the first interval, UTC (a naive datetime is taken as UTC)."""
    seed: int = 42
    anomaly_rate: float = 0.05
    """Anomaly events per meter-day."""
    meters_per_feeder: int = 50
    missing_rate: float = 0.002
    """Share of readings never delivered."""
    late_rate: float = 0.002
    """Share of readings delivered 1-6 intervals late (flagged LATE)."""
    institution_share: float = 0.15
    """Share of meters that are schools, clinics or shops rather than households (original fleet)."""
    archetypes: tuple[tuple[str, float], ...] | None = None
    """(archetype, share of feeders) pairs, e.g. :data:`simulation.archetypes.MIXED_FLEET`; None: the
    original fleet of households and institutions."""
    country: str | None = None
    """Country whose public holidays close commercial buildings (``holidays`` package code)."""
    climate: Climate = Climate()
    """The fleet's weather (heating gas, cooling, irrigation seasons)."""

    def __post_init__(self) -> None:
        problems = []
        if self.meters < 1:
            problems.append(f"meters must be at least 1, got {self.meters}")
        if self.interval.total_seconds() <= 0 or self.interval.total_seconds() != int(self.interval.total_seconds()):
            problems.append(f"interval must be a positive whole number of seconds, got {self.interval}")
        if self.days < 0:
            problems.append(f"days must be >= 0 (0 = endless), got {self.days}")
        if self.meters_per_feeder < 1:
            problems.append(f"meters_per_feeder must be at least 1, got {self.meters_per_feeder}")
        if self.anomaly_rate < 0:
            problems.append(f"anomaly_rate must be >= 0, got {self.anomaly_rate}")
        for name in ("missing_rate", "late_rate", "institution_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be between 0 and 1, got {value}")
        unknown = [a for a, _ in self.archetypes or () if a not in ARCHETYPES]
        if unknown:
            problems.append(f"unknown archetypes {unknown}; known: {', '.join(ARCHETYPES)}")
        if problems:
            raise ValueError("invalid fleet config: " + "; ".join(problems))
        if self.start.tzinfo is None:
            object.__setattr__(self, "start", self.start.replace(tzinfo=UTC))

    @property
    def interval_seconds(self) -> int:
        return int(self.interval.total_seconds())

    @property
    def steps_per_day(self) -> float:
        return 86400.0 / self.interval_seconds

    @property
    def endless(self) -> bool:
        return self.days <= 0

    @property
    def steps(self) -> int:
        """Intervals in the whole run (at least one); meaningless for an endless run."""
        return max(1, round(self.days * self.steps_per_day))


@dataclass
class SimulatedFleet:
    readings: pd.DataFrame
    """Delivery order. timestamp (datetime64[ms, UTC], end of interval), meter_id, feeder_id, kwh,
    interval_seconds, quality_flags (';'-joined), label (0/1), anomaly_kind, event_id ('' if none)."""
    labels: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(LABEL_COLUMNS)))
    """Ground-truth events: event_id, meter_id, feeder_id, kind, start, end (inclusive interval-end timestamps)."""

    def write_labels(self, path: Path | str, *, append: bool = False) -> None:
        """Ground-truth events as CSV; ``append`` adds to a file an earlier block started (no header)."""
        self.labels.loc[:, list(LABEL_COLUMNS)].to_csv(
            path, index=False, date_format=CSV_DATE_FORMAT, mode="a" if append else "w", header=not append)

    def write_readings_csv(self, path: Path | str, *, append: bool = False) -> None:
        """Readings with point labels: ``timestamp,meter_id,kwh,label`` first, then the rest."""
        self.readings.loc[:, list(READINGS_CSV_COLUMNS)].to_csv(
            path, index=False, date_format=CSV_DATE_FORMAT, mode="a" if append else "w", header=not append)


class FleetSimulator:
    """Generates a fleet block after block; :func:`simulate_fleet` is one block of the whole run.

    Meters keep their traits across blocks; each block draws its own noise and anomalies from
    ``(seed, block number)``, so a run is reproducible for a given block size.
    """

    def __init__(self, cfg: FleetConfig) -> None:
        self.cfg = cfg
        if cfg.archetypes is None:
            self.profiles = original_profiles(cfg.meters, cfg.meters_per_feeder, cfg.institution_share, cfg.seed)
            self.demand: ArchetypeDemand | None = None
        else:
            self.profiles = archetype_profiles(cfg.meters, cfg.meters_per_feeder, cfg.archetypes, cfg.seed)
            self.demand = ArchetypeDemand(self.profiles, cfg.interval_seconds, cfg.seed, cfg.climate,
                                          holidays=_holiday_days(cfg))
        self.next_step = 0
        """Global index of the first interval of the next block."""
        self._block = 0
        self._events_started = 0
        self._running: list[Event] = []
        """Events that continue past the end of the last block."""
        self._held: dict[str, np.ndarray] | None = None
        """Late readings delivered after the end of the last block."""
        self._last_energy: np.ndarray | None = None
        self._level: np.ndarray | None = None
        """Each meter's typical absolute energy per interval (archetype fleets), for additive anomalies."""

    @property
    def finished(self) -> bool:
        return not self.cfg.endless and self.next_step >= self.cfg.steps

    def time_of(self, steps: np.ndarray) -> pd.DatetimeIndex:
        """Interval-end timestamps (UTC, ms) of global step indices."""
        start_ms = datetime_ms(self.cfg.start)
        ms = start_ms + (np.asarray(steps, dtype=np.int64) + 1) * self.cfg.interval_seconds * 1000
        return utc_index(ms)

    def next_block(self, steps: int) -> SimulatedFleet:
        """The next ``steps`` intervals (fewer at the end of a finite run)."""
        if self.finished:
            raise RuntimeError("the simulated run is over: no more blocks")
        cfg = self.cfg
        if not cfg.endless:
            steps = min(steps, cfg.steps - self.next_step)
        block_start = self.next_step
        final = not cfg.endless and block_start + steps >= cfg.steps
        rng = np.random.default_rng([cfg.seed, 1, self._block])
        times = self.time_of(np.arange(block_start, block_start + steps))

        if self.demand is None:
            energy = original_energy(self.profiles, times, cfg.interval_seconds, rng)
        else:
            energy = self.demand.energy(times, rng)
            if self._level is None:
                self._level = self.demand.typical_level(energy)
        kind_of = np.full(energy.shape, -1, dtype=np.int8)
        event_of = np.full(energy.shape, -1, dtype=np.int32)
        block_events = list(self._running)
        for i, event in enumerate(block_events):
            apply_event(event, energy, kind_of, event_of, block_start, i, additive=self.demand is not None)
        new_events = self._inject(energy, kind_of, event_of, block_events, block_start, rng)
        dropped = np.zeros(energy.shape, dtype=bool)
        if self.demand is not None:
            new_events += self._catch_ups(energy, kind_of, event_of, dropped, block_events, block_start, rng)
        self._running = [e for e in block_events if (e.effect_end or e.end) > block_start + steps]
        self._last_energy = energy[-1].copy()

        readings = self._readings(energy, kind_of, event_of, dropped, block_events, times, rng, final)
        labels = pd.DataFrame({
            "event_id": [e.event_id for e in new_events],
            "meter_id": self.profiles.meter_ids[[e.meter for e in new_events]].astype(object),
            "feeder_id": self.profiles.feeder_ids[[e.meter for e in new_events]].astype(object),
            "kind": [e.name for e in new_events],
            "start": self.time_of(np.array([e.start for e in new_events], dtype=np.int64)),
            "end": self.time_of(np.array([e.end - 1 for e in new_events], dtype=np.int64)),
        }, columns=list(LABEL_COLUMNS))
        self.next_step += steps
        self._block += 1
        return SimulatedFleet(readings=readings, labels=labels)

    def _new_event(self, meter: int, name: str, start: int, length: int, param: float,
                   effect_end: int | None = None) -> Event:
        event = Event(f"E{self._events_started:05d}", meter, ALL_KINDS.index(name), start, length, param, effect_end)
        self._events_started += 1
        return event

    def _inject(self, energy: np.ndarray, kind_of: np.ndarray, event_of: np.ndarray, block_events: list[Event],
                block_start: int, rng: np.random.Generator) -> list[Event]:
        """Draw this block's new anomalies, apply them, append them to ``block_events``, return them.

        Events start in this block and may run into later ones; in a finite run they end
        before the run does (events longer than half the run are shortened to half of it, so a
        one-day run still gets drifts). A meter's events are kept an hour apart so each is a
        distinct ground-truth episode; a draw that collides is dropped, which at the default rate
        costs a few percent of the events (the draws stay as they were, so fleets other code
        was tuned on do not change).
        """
        cfg = self.cfg
        steps, meters = energy.shape
        per_hour = 3600.0 / cfg.interval_seconds
        guard = max(1, int(per_hour))
        n_events = rng.poisson(cfg.anomaly_rate * meters * steps / cfg.steps_per_day)
        new_events: list[Event] = []
        for _ in range(n_events):
            if self.demand is None:
                name = ANOMALY_KINDS[int(rng.integers(len(ANOMALY_KINDS)))]
                m = int(rng.integers(meters))
            else:
                m = int(rng.integers(meters))
                kinds = archetype_kinds(self.profiles.archetype[m])
                name = kinds[int(rng.integers(len(kinds)))]
            length = event_length(name, per_hour, rng)
            if cfg.endless:
                latest = steps  # exclusive bound on the block-relative start
            else:
                length = min(length, max(1, cfg.steps // 2))
                latest = min(steps, cfg.steps - block_start - length)
            if latest <= 0:
                continue
            s = int(rng.integers(0, latest))
            if (event_of[max(0, s - guard):min(steps, s + length + guard), m] >= 0).any():
                continue  # keep a meter's events apart so each is a distinct ground-truth episode
            effect_end = None
            if self.demand is None:
                param = original_param(name, energy, s, m, self._last_energy, rng)
            else:
                param = archetype_param(name, self.profiles.archetype[m], energy, s, length, m, self._level[m], rng)
                if param is None:
                    continue
                if name == "level_shift":
                    if any(e.meter == m and e.name == "level_shift" for e in block_events):
                        continue  # one change of level per building and run is plenty
                    effect_end = FOR_GOOD if cfg.endless else cfg.steps
            event = self._new_event(m, name, block_start + s, length, param, effect_end)
            apply_event(event, energy, kind_of, event_of, block_start, len(block_events),
                        additive=self.demand is not None)
            block_events.append(event)
            new_events.append(event)
        return new_events

    def _catch_ups(self, energy: np.ndarray, kind_of: np.ndarray, event_of: np.ndarray, dropped: np.ndarray,
                   block_events: list[Event], block_start: int, rng: np.random.Generator) -> list[Event]:
        """Gaps of the gappy head-ends: their meters' readings go missing for hours, then each meter's
        next reading carries the energy of the whole gap (a catch-up, labelled as such)."""
        cfg, prof = self.cfg, self.profiles
        steps = energy.shape[0]
        feeders = np.unique(prof.feeder_ids[prof.archetype == HEADEND_GAPS])
        events = []
        for f, start, end in gaps(steps, len(feeders), 3600.0 / cfg.interval_seconds, cfg.steps_per_day, rng):
            for m in np.flatnonzero(prof.feeder_ids == feeders[f]):
                if (kind_of[start:end + 1, m] >= 0).any():
                    continue  # an anomaly in the gap: leave this meter's readings alone
                energy[end, m] = energy[start:end + 1, m].sum()
                dropped[start:end, m] = True
                event = self._new_event(int(m), "catch_up", block_start + end, 1, float(end - start))
                kind_of[end, m] = event.kind
                event_of[end, m] = len(block_events)
                block_events.append(event)
                events.append(event)
        return events

    def _readings(self, energy: np.ndarray, kind_of: np.ndarray, event_of: np.ndarray, dropped: np.ndarray,
                  block_events: list[Event], times: pd.DatetimeIndex, rng: np.random.Generator,
                  final: bool) -> pd.DataFrame:
        """Flatten the block to readings in delivery order, with missing and late readings."""
        cfg, prof = self.cfg, self.profiles
        steps, meters = energy.shape
        interval_ms = cfg.interval_seconds * 1000
        ts = np.repeat(times.asi8, meters)
        meter_idx = np.tile(np.arange(meters, dtype=np.int64), steps)
        keep = rng.random(ts.size) >= cfg.missing_rate
        late = (rng.random(ts.size) < cfg.late_rate) & keep
        delay_steps = np.where(late, rng.integers(1, _MAX_LATE_INTERVALS + 1, ts.size), 0)
        if dropped.any():
            keep &= ~dropped.ravel()
            late &= keep
            catch_up = kind_of.ravel() == ALL_KINDS.index("catch_up")
            late &= ~catch_up  # a catch-up is delivered when the link is back
            delay_steps = np.where(late, delay_steps, 0)
        event_ids = np.array([e.event_id for e in block_events] + [""], dtype=object)
        columns = {
            "timestamp": ts,
            "meter": meter_idx,
            "kwh": np.round(energy.ravel(), 4),
            "kind": kind_of.ravel(),
            "event": event_ids[event_of.ravel()],  # -1 picks the trailing ""
            "late": late,
            "delivery": ts + delay_steps * interval_ms,
        }
        columns = {name: values[keep] for name, values in columns.items()}
        if self._held is not None:
            columns = {name: np.concatenate([self._held[name], values]) for name, values in columns.items()}
            self._held = None
        if not final:  # late readings due after this block go out with the block they are due in
            due_later = columns["delivery"] > times.asi8[-1]
            if due_later.any():
                self._held = {name: values[due_later] for name, values in columns.items()}
                columns = {name: values[~due_later] for name, values in columns.items()}
        # Delivery order: by delivery slot; within a slot the on-time readings, then the late ones.
        order = np.lexsort((columns["meter"], columns["late"], columns["delivery"]))
        columns = {name: values[order] for name, values in columns.items()}
        kind_names = np.array(list(ALL_KINDS) + [""], dtype=object)
        return pd.DataFrame({
            "timestamp": utc_index(columns["timestamp"]),
            "meter_id": prof.meter_ids[columns["meter"]],
            "feeder_id": prof.feeder_ids[columns["meter"]],
            "kwh": columns["kwh"],
            "interval_seconds": cfg.interval_seconds,
            "quality_flags": np.where(columns["late"], LATE_FLAG, ""),
            "label": (columns["kind"] >= 0).astype(np.int8),
            "anomaly_kind": kind_names[columns["kind"]],
            "event_id": columns["event"],
            "archetype": prof.archetype[columns["meter"]],
        })


def _holiday_days(cfg: FleetConfig) -> set[int]:
    """Day numbers of the configured country's public holidays over the run (and a year on)."""
    if not cfg.country:
        return set()
    import holidays

    first = cfg.start.year
    last = first + (2 if cfg.endless else int(cfg.days // 365) + 1)
    return {int(np.datetime64(day, "D").astype(np.int64))
            for day in holidays.country_holidays(cfg.country, years=range(first, last + 1))}


def simulate_fleet(cfg: FleetConfig) -> SimulatedFleet:
    """The whole run at once: readings in delivery order and the ground-truth events."""
    if cfg.endless:
        raise ValueError("an endless fleet (days=0) can only be generated block by block: use iter_fleet_blocks")
    return FleetSimulator(cfg).next_block(cfg.steps)


def iter_fleet_blocks(cfg: FleetConfig, block_days: float = 1.0) -> Iterator[SimulatedFleet]:
    """Consecutive blocks of ``block_days``; endless when ``cfg.days`` is 0.

    Anomalies and late readings carry over from block to block, so the block size only
    bounds memory: a drift still grows over days with one-day blocks.
    """
    simulator = FleetSimulator(cfg)
    block_steps = max(1, round(block_days * cfg.steps_per_day))
    while not simulator.finished:
        yield simulator.next_block(block_steps)
