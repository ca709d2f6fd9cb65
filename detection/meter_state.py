"""Every meter's detector state, in flat numpy arrays: one row per meter.

A batch of thousands of readings is handled with array operations over rows, not a Python
object per meter. Rows are assigned on first sight and never move while their meter is kept, so
callers may keep them; a released meter's row (:meth:`MeterStateStore.release`) is cleared and
given to the next new meter.
A group of meters' rows is exported as plain arrays (:meth:`MeterStateStore.export_rows`) and
imported back, which is how the stream worker persists a feeder (see :mod:`detection.state_codec`).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from detection.calendar import HOD_SLOTS, HOW_SLOTS

WINDOW = 4
"""Readings in the recent window (1 h of 15-minute data, 4 h of hourly, 4 days of daily)."""
SEEN = 32
"""Timestamps remembered per meter to recognise duplicates and late readings."""
NO_TIME = np.iinfo(np.int64).min
"""An empty timestamp slot."""


class Scalar(IntEnum):
    """Columns of :attr:`MeterStateStore.scalars`, one float64 per meter each."""

    LAST_KWH = 0
    """The newest in-order reading."""
    INTERVAL = 1
    """Its interval in seconds."""
    READINGS = 2
    """In-order readings applied so far."""
    MEAN = 3
    VAR = 4
    """Exponentially weighted mean and variance of all the meter's readings."""
    UNCHANGED_RUN = 5
    """Consecutive non-zero readings equal to the one before (stuck register)."""
    ZERO_RUN = 6
    """Consecutive zero readings."""
    DRIFT_OBSERVED = 7
    DRIFT_EXPECTED = 8
    """Slow (3-day) averages of usage and of its baseline."""
    SCORE_MEAN = 9
    SCORE_VAR = 10
    """The meter's usual model score and its variance, for per-meter thresholds."""
    WINDOW_POS = 11
    """Next position in the recent-window ring."""
    LEVEL = 12
    """Exponentially weighted mean of the absolute reading: the meter's scale, for what is material."""
    QUANTUM = 13
    """The register's resolution, inferred: the smallest step between readings seen (0 until known)."""
    LAST_CLEAN = 14
    """The newest in-order reading, clipped to a few spreads of its baseline: what a change is
    measured from, so one spike does not make the reading after it look like a fall."""
    REPEAT_TRIALS_LOW = 15
    REPEAT_HITS_LOW = 16
    """Readings near zero (a few register steps) and how many repeated the one before."""
    REPEAT_TRIALS_HIGH = 17
    REPEAT_HITS_HIGH = 18
    """The same above that: a meter's own run-length habits, by level."""
    ZERO_RECENT = 19
    """Exponentially weighted share of zero readings over the last days: the meter's zero regime now."""
    SHIFT_UP = 20
    SHIFT_DOWN = 21
    """One-sided sums of sustained deviation (in hours): a level shift when one crosses its threshold."""
    SHIFT_SUM = 22
    SHIFT_HOURS = 23
    """Deviation summed and hours counted since the shift sums last left zero: the shift's size."""
    SHIFT_SINCE = 24
    """When the running shift began (epoch ms), for its sentence."""
    SCORE_COUNT = 25
    """Model-scored readings behind SCORE_MEAN and SCORE_VAR."""
    DRIFT_Z = 26
    """Slow (3-day) average of the readings' clipped deviations, in spreads."""
    PEAK = 27
    """The largest absolute reading seen, slowly forgotten: a resolution is only one if readings
    reach several of its steps (an on/off pump's one level is no register step)."""
    ZERO_TRIALS = 28
    ZERO_STAYS = 29
    """Zero readings followed by another reading, and how many of those were zero too: how long this
    meter's zero runs usually last (a gas meter's warm afternoons, a pump's idle nights)."""
    LOG_LEVEL = 30
    """log of the meter's level since its last level shift over the level its slot baselines were
    learnt at: slots keep their shape through a shift, and are read and learnt at the new level."""
    LAST_SHIFT = 31
    LAST_SHIFT_AT = 32
    """log of the last reported level shift's factor (0: none) and when (epoch ms): a shift back soon
    after ends a temporary change (a holiday week), and restores the level before it exactly."""
    ZERO_LONG = 33
    """The same share of zero readings as ZERO_RECENT over about a month: the recent share above it
    is a new zero regime (a heating season ending)."""
    HABIT_LEVEL = 34
    HABIT_COUNT = 35
    """The size (kWh) of the meter's recent excursions (the largest, slowly coming down), and on how many
    occasions it made them lately (decaying over a week): a load drawn again and again is a habit."""
    IN_OCCASION = 36
    """1 while an occasion of excursions goes on: begun by an excursion, it lasts while the readings stay
    well above their usual (see :data:`detection.features.OCCASION_END`)."""


ARRAY_NAMES = ("last_ts", "scalars", "window", "window_z", "seen", "how", "hod")
"""The per-meter arrays, in the order they are exported."""


class MeterStateStore:
    """Per-meter state in flat arrays; rows are assigned on first sight and never move while kept."""

    def __init__(self, capacity: int = 16384) -> None:
        self.index: dict[str, int] = {}
        """meter -> row, of the meters kept."""
        self._used = 0
        """Rows ever assigned: the arrays' rows at and past it are fresh."""
        self._free: list[int] = []
        """Released rows, cleared, for the next new meters."""
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        self.capacity = capacity
        self.last_ts = np.full(capacity, NO_TIME, dtype=np.int64)
        """Timestamp of the newest in-order reading."""
        self.scalars = np.zeros((capacity, len(Scalar)))
        self.window = np.zeros((capacity, WINDOW))
        """The recent readings, clipped to a few spreads of their baselines (a ring, see :attr:`Scalar.WINDOW_POS`)."""
        self.window_z = np.zeros((capacity, WINDOW))
        """Their deviations from their baselines, in spreads, clipped."""
        self.seen = np.full((capacity, SEEN), NO_TIME, dtype=np.int64)
        """The newest scored timestamps, in no order."""
        self.how = np.zeros((capacity, HOW_SLOTS, 3), dtype=np.float32)
        """Hour-of-week baseline: mean, variance, count per slot."""
        self.hod = np.zeros((capacity, HOD_SLOTS, 6), dtype=np.float32)
        """Hour-of-day baseline by day type: mean, variance, count, share of zero readings, 90% and 10%
        quantiles per slot."""

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, name) for name in ARRAY_NAMES)

    def _grow(self, needed: int) -> None:
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        old = self._arrays()
        n = self._used
        self._allocate(capacity)
        for new, prev in zip(self._arrays(), old):
            new[:n] = prev[:n]

    def __len__(self) -> int:
        return len(self.index)

    def rows_for(self, meter_ids: list[str]) -> np.ndarray:
        """Row of each meter, assigning rows to meters seen for the first time (released rows first)."""
        index, free = self.index, self._free
        rows = np.empty(len(meter_ids), dtype=np.int64)
        for i, m in enumerate(meter_ids):
            row = index.get(m)
            if row is None:
                if free:
                    row = free.pop()
                else:
                    row = self._used
                    if row >= self.capacity:
                        self._grow(row + 1)
                    self._used += 1
                index[m] = row
            rows[i] = row
        return rows

    def release(self, meter_ids: list[str]) -> None:
        """Forget the meters (unknown ones are ignored): their rows are cleared for new meters."""
        rows = [row for row in (self.index.pop(m, None) for m in meter_ids) if row is not None]
        if not rows:
            return
        at = np.array(rows, dtype=np.int64)
        self.last_ts[at] = NO_TIME
        self.seen[at] = NO_TIME
        for name in ("scalars", "window", "window_z", "how", "hod"):
            getattr(self, name)[at] = 0
        self._free.extend(rows)

    def export_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the rows' arrays, by :data:`ARRAY_NAMES`."""
        return {name: getattr(self, name)[rows] for name in ARRAY_NAMES}

    def import_rows(self, meter_ids: list[str], arrays: dict[str, np.ndarray]) -> None:
        """Set the meters' state from :meth:`export_rows` output (rows assigned as needed).

        State exported before later :class:`Scalar` columns were added lacks them: they start at zero,
        which every column reads as "nothing known yet"."""
        rows = self.rows_for(meter_ids)
        for name in ARRAY_NAMES:
            values = arrays[name]
            if name == "scalars" and values.shape[1] < len(Scalar):
                values = np.pad(values, ((0, 0), (0, len(Scalar) - values.shape[1])))
            getattr(self, name)[rows] = values


def classify_arrivals(store: MeterStateStore, rows: np.ndarray,
                      ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(duplicate, late, stale) per reading of one round (at most one reading per meter).

    * duplicate: the meter's memory holds this timestamp: it was scored before;
    * late: older than the meter's newest reading and not seen: scored, but the state, which
      has moved past it, is not updated by it;
    * stale: older than every timestamp of a full memory: too old to tell whether it was scored
      before (a replay after a crash) or to judge against today's state; counted, not scored.
    """
    seen = store.seen[rows]
    duplicate = (seen == ts[:, None]).any(axis=1)
    has_history = store.scalars[rows, Scalar.READINGS] > 0
    oldest_seen = np.where(seen == NO_TIME, np.iinfo(np.int64).max, seen).min(axis=1)
    full_memory = (seen != NO_TIME).all(axis=1)
    late = has_history & ~duplicate & (ts < store.last_ts[rows])
    stale = late & full_memory & (ts < oldest_seen)
    return duplicate, late & ~stale, stale


def remember_scored(store: MeterStateStore, rows: np.ndarray, ts: np.ndarray) -> None:
    """Add scored timestamps to their meters' memories (one per meter), replacing the oldest.

    The memory keeps the newest :data:`SEEN` timestamps: a replay of old readings after a crash
    (or a burst of late ones) never pushes out the newest, which a re-delivery of the last
    readings must still find.
    """
    memory = store.seen[rows]
    oldest = memory.argmin(axis=1)
    newer = ts > memory[np.arange(len(rows)), oldest]
    store.seen[rows[newer], oldest[newer]] = ts[newer]
