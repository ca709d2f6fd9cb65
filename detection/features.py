"""The features the detector scores, computed for a whole batch at once, and the state they advance.

The same code serves the stream worker (one micro-batch of messages at a time) and every
offline replay (``wattsup detect``, training, evaluation), so offline results are exactly what
the stream would have said. A batch may hold several readings of one meter; they are taken in
*rounds* (the k-th reading of every meter in round k), which keeps each meter's readings in order.

Every feature is measured against the meter itself, so a 0.1 kWh household, a 500 kWh building,
a gas meter counting whole cubic metres and a solar meter that exports at noon need no tuning:

==========================  ======================================================================
``deviation``               (usage - baseline) / the slot's usual spread
``relative_deviation``      asinh of (usage - baseline) / (|baseline| + a quarter of the meter's level)
``change``                  change from the previous reading in the meter's usual spread (0 after a gap)
``window_deviation``        the last readings' mean deviation from their baselines, in spreads (each clipped)
``window_variability``      log of the recent spread over the meter's usual spread (stuck: very low)
``repeat_surprise``         how improbable the current run of an unchanged reading is for this meter at
                            this level (-log10 of its probability)
``zero_surprise``           how improbable the current run of zero readings is for this meter now (its
                            chance of reading zero here, and how long its zero runs usually last)
``drift``                   a slow (3-day) average of the readings' deviations, in spreads (each clipped)
``hour_sin/cos``            time of day
``dow_sin/cos``             day of week
``forecast_residual``       signed log(1 + |usage - forecast| / the slot's usual spread); NaN without one
==========================  ======================================================================

The relative deviation divides by the baseline plus a quarter of the meter's level (its usual
absolute reading), never by the baseline alone: four times 0.02 kWh on a meter that usually reads
1 kWh is not an event, and a net meter's baseline may be zero or negative. What lasts (the window,
the drift, a level shift) is measured in spreads, which an intermittent pump or a car charged on
some nights widen where they are usual. Readings enter the window, the drift and "the previous
reading" clipped to :data:`CLEAN_SPREADS` spreads of their baseline, so one spike does not echo
into the readings after it as a high window or a fall.

Missing and late readings, the documented policy:

* a gap (the previous reading is more than 1.5 intervals back) resets ``change`` and the run
  counters; a missing interval is never read as zero usage;
* a reading after a gap that carries about the energy of the whole gap is a **catch-up**
  (``FeatureBatch.catch_up``): a data-quality event, not a spike; it does not move the baseline;
* duplicates, late and stale readings are told apart by
  :func:`detection.meter_state.classify_arrivals`: a duplicate is never scored again, a late
  reading is scored without moving the state (and without peers, see :meth:`FeatureExtractor.transform`),
  a stale one is counted, not scored.

Level shifts: one-sided sums of the sustained deviation in spreads (a CUSUM, over hours) notice a
meter that changed level for good. When one crosses :data:`SHIFT_THRESHOLD`, the meter's baselines
move to the new level at once (``FeatureBatch.level_shift``), so a building that changed its
hours or equipment is flagged once and then judged by its new normal, not for days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from detection.baseline import (
    UNKNOWN_DAY_TYPES,
    UNKNOWN_FLEET_TAILS,
    DayTypeProfile,
    FleetTails,
    SlotBaseline,
    slot_baseline,
    update_baseline,
)
from detection.calendar import UTC_CALENDAR, FleetCalendar, Slots
from detection.meter_state import (
    WINDOW,
    MeterStateStore,
    Scalar,
    classify_arrivals,
    remember_scored,
)
from detection.peers import PEER_FEATURES, correct_for_peers, correct_zero_runs_for_peers, shared_level_shifts
from detection.readings import ReadingBatch

FEATURE_NAMES: tuple[str, ...] = (
    "deviation",
    "relative_deviation",
    "change",
    "window_deviation",
    "window_variability",
    "repeat_surprise",
    "zero_surprise",
    "drift",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "forecast_residual",
)
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
PEER_COLUMNS = [FEATURE_INDEX[name] for name in PEER_FEATURES]

WARMUP_DAYS = 1.0
"""History a meter needs before the model scores it; until then baseline rules do."""
CONTIGUOUS_INTERVALS = 1.5
"""A reading further than this many intervals after the previous one follows a gap."""
DRIFT_DAYS = 3.0
"""Time constant of the slow averages behind ``drift``."""
ZERO_REGIME_MIN = 0.15
"""A recent share of zeros this far above the long-run one is a new regime: a season's end turns whole
days to zero; one outage's hours (a twelve-hour one adds 0.15) are not a regime of their own."""
ZERO_REGIME_DAYS = 3.0
ZERO_LONG_DAYS = 30.0
"""Time constants of a meter's recent and long-run shares of zero readings: a heating season ends
within days; a month is long enough to hold its spring nights."""
FEATURE_CLIP = 50.0
"""Spread-scaled features are clipped here: beyond 50 spreads more tells the forest nothing."""
LEVEL_SHARE = 0.25
"""Share of the meter's level added to a baseline before dividing by it (see the module docstring)."""
CLEAN_SPREADS = 3.0
"""A reading enters the window and the next change clipped to this many spreads of its baseline."""
QUANTUM_MIN_STEPS = 2.0
"""A smallest step is a register's resolution only once readings have reached this many of it."""
NEAR_ZERO_STEPS = 3.0
"""Readings within this many register steps of zero repeat often on a counting register."""
REPEAT_PRIOR = {"low": (5.0, 5.0), "high": (0.5, 20.0)}
"""Beta prior (repeats, changes) of a repeated reading: near zero a register repeats half the time
until the meter shows otherwise, above it one time in forty."""
PEAK_MEMORY = 0.9995
"""The peak reading decays by this factor per reading: forgotten over a few thousand readings."""
ZERO_STAY_PRIOR = (1.0, 4.0)
"""Beta prior (stays, ends) of a zero reading being followed by another: one in five until the meter
shows how long its zero runs last."""
REPEAT_MEMORY = 0.999
"""Each reading's weight in the repeat counts decays by this factor: about the last 1,000 readings."""
NEAR_ZERO_LEVEL = 0.05
"""An hour whose 10% quantile is below this share of the meter's level reads zero as a matter of course."""
ZERO_PROBABILITY_FLOOR = 0.0005
"""No zero is judged less likely than this: a meter that never read zero may still, now and then;
with the zero-run prior, two hours of zeros of an hourly meter that never reads zero are an outage."""
SURPRISE_LEARN_LIMIT = 4.0
"""Runs this improbable are not learnt as the meter's habit (they are the anomalies)."""
DEVIATION_EXCURSION = 3.0
"""Spreads above its baseline that make a reading an excursion, the stuff of habits."""
OCCASION_END = 1.5
"""An occasion of excursions ends when a reading is back within this many spreads of its usual: half the
excursion's distance, so a load hovering about the excursion line stays one occasion (hysteresis)."""
HABIT_DAYS = 7.0
"""A meter's excursion occasions are remembered over about a week (a count that decays with this time constant)."""
HABIT_MIN_COUNT = 2.0
"""Occasions (runs of excursions, not readings) within that memory that make a habit: two occasions, the
first decayed a little, fall just short, so a car charged on three nights within days is a habit (two
coincidences are not yet one). Counting readings made one long event (a heater left on for hours) a
habit within itself."""
HABIT_RANGE = 1.5
"""A habit covers loads within this factor of its size either way: a car's charging hours, not an extra
kilowatt-hour in the afternoon; outside it a reading is judged as usual."""
HABIT_SPREADS = 2.0
"""Where a habit's usual size lies in its hour's upper spread: inside the ordinary (not material) range."""
HABIT_ALPHA = 0.3
"""Weight of a new excursion in the habit's size as it comes down; a larger one sets it at once, so a car's
partial first and last charging hours do not pull the size below its full hours'."""
DORMANT_ZERO_SHARE = 0.95
DORMANT_DAYS = 7.0
"""A meter whose readings have been zero this much of the time (over its last month, or its life if
shorter) for at least a week is dormant: off season, or empty."""
SHIFT_SLACK = 0.5
"""Deviation (spreads) the level-shift sums ignore: ordinary variation."""
SHIFT_CAP = 2.0
"""One reading adds at most this many spreads per hour: an hour-long spike cannot shift a level."""
SHIFT_THRESHOLD = 24.0
"""Threshold of the level-shift sums (spreads x hours): a level two spreads off for about 16 h; an
8-hour high load or a 12-hour outage stays below it."""
SHIFT_MATERIAL = 1.25
"""A level shift is reported when the new level is at least this factor above or below the old: a
change of less than a quarter is within the seasonal and weather variation of real meters, and the
baselines, which move with it at once, follow it silently."""
RETURN_DAYS = 21.0
"""A shift against the last reported one within this many days ends a temporary change (a holiday
week, a plant's two-week shutdown): the level before it is restored exactly, without a second
report. The size of the way back is not compared: the sums estimate it from hours that moved and
hours that did not, and a level that settles elsewhere is found again by the sums."""
SHIFT_MIN_READINGS = 3
"""Readings a level shift needs at least, however long their intervals: one reading is one event (a
guest's day, a day's shutdown) whether it covers an hour or a day, and a daily-read meter's new level
shows only on several days."""
SHIFT_READING_HOURS = SHIFT_THRESHOLD / (SHIFT_MIN_READINGS * (SHIFT_CAP - SHIFT_SLACK))
"""Hours one reading counts for in the shift sums at most (5.3 h): at the cap, SHIFT_MIN_READINGS readings
reach the threshold. Hourly and 15-minute readings count in full."""


@dataclass
class FeatureBatch:
    """Features of one batch plus what explanations and rules need, row-aligned with the input."""

    matrix: np.ndarray
    """[n, len(FEATURE_NAMES)] float64; rows of duplicates and stale readings are zeros."""
    expected: np.ndarray
    """The forecast's expected usage (kWh) per reading; NaN where no forecast covers it."""
    baseline: np.ndarray
    """The meter's usual usage (kWh) for the reading's slot, from its own history."""
    spread: np.ndarray
    level: np.ndarray
    """The meter's usual absolute reading (kWh per interval)."""
    quantum: np.ndarray
    """The register's resolution as inferred so far (0: continuous)."""
    slot_observations: np.ndarray
    """Hours of observation behind the reading's baseline."""
    borrowed: np.ndarray
    """Share of the baseline borrowed from the other day type (a meter's first weekday: nearly all)."""
    repeat_run: np.ndarray
    """Readings equal to the one before, in a row, this one included (0 if it changed)."""
    zero_run: np.ndarray
    """Zero readings in a row, this one included."""
    zero_probability: np.ndarray
    """How likely a zero reading is for this meter now, in this slot."""
    slot_labels: np.ndarray
    """hour-of-week slot (0..167, Monday 00:00 = 0) or day of week for daily data."""
    duplicate: np.ndarray
    stale: np.ndarray
    late: np.ndarray
    cold: np.ndarray
    """Meters still warming up: scored by the baseline rules."""
    history_hours: np.ndarray
    """Hours of in-order history the meter had before this reading."""
    lower: np.ndarray
    upper: np.ndarray
    """The forecast band (kWh); NaN where no forecast covers the reading."""
    band_residual: np.ndarray
    """(usage - forecast) / half the band's width, unclipped; NaN where no forecast covers it."""
    drift_ratio: np.ndarray
    """Slow average of usage over that of the baseline."""
    gap_intervals: np.ndarray
    """Intervals missing before this reading (0: contiguous)."""
    catch_up: np.ndarray
    """A reading after a gap that carries the gap's energy (see the module docstring)."""
    level_shift: np.ndarray
    """This reading confirmed a material, lasting change of the meter's level; its baselines moved with
    it (smaller shifts, and the way back from a temporary one, move them silently)."""
    shift_factor: np.ndarray
    """The new level over the old one, where ``level_shift``."""
    shift_since: np.ndarray
    """When the shift began (epoch ms), where ``level_shift``."""
    shift_pressure: np.ndarray
    """How far the meter's level-shift sums are towards a shift: +1 or -1 at a crossing up or down."""
    round: np.ndarray
    """k for the k-th reading of its meter in this batch: rows of one round are one per meter."""
    slots: Slots | None = None
    """Each reading's baseline slots in the fleet's local time (the ones its state was written to)."""

    @classmethod
    def empty(cls, n: int, expected: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> FeatureBatch:
        def zeros() -> np.ndarray:
            return np.zeros(n)

        def flags() -> np.ndarray:
            return np.zeros(n, dtype=bool)

        return cls(
            matrix=np.zeros((n, len(FEATURE_NAMES))), expected=expected.copy(), baseline=zeros(), spread=zeros(),
            level=zeros(), quantum=zeros(), slot_observations=zeros(), borrowed=zeros(), repeat_run=zeros(), zero_run=zeros(), zero_probability=zeros(),
            slot_labels=np.zeros(n, dtype=np.int64), duplicate=flags(), stale=flags(), late=flags(), cold=flags(),
            history_hours=zeros(), lower=lower.copy(), upper=upper.copy(), band_residual=np.full(n, np.nan),
            drift_ratio=np.ones(n), gap_intervals=zeros(), catch_up=flags(),
            level_shift=flags(), shift_factor=np.ones(n), shift_since=np.zeros(n, dtype=np.int64),
            shift_pressure=zeros(), round=np.zeros(n, dtype=np.int64),
        )

    @property
    def scored(self) -> np.ndarray:
        return ~(self.duplicate | self.stale)

    def feature(self, name: str) -> np.ndarray:
        return self.matrix[:, FEATURE_INDEX[name]]


def forecast_deviation(spreads: np.ndarray) -> np.ndarray:
    """The forecast residual as the detector sees it: signed log of one plus the miss in spreads.

    The log keeps one huge miss (a young meter's forecast near zero) from dwarfing the other
    features, as the relative features are compressed for the same reason; NaN (no forecast) stays.
    """
    return np.sign(spreads) * np.log1p(np.abs(spreads))


def round_indices(occurrence: np.ndarray) -> list[np.ndarray]:
    """Row indices of each round (ascending), found with one sort rather than a scan per round:
    a file of few meters with many readings each has as many rounds as readings per meter."""
    if len(occurrence) == 0:
        return []
    by_round = np.argsort(occurrence, kind="stable")
    ends = np.cumsum(np.bincount(occurrence))
    return [by_round[start:end] for start, end in zip(np.r_[0, ends[:-1]].tolist(), ends.tolist())]


def occurrences(rows: np.ndarray) -> np.ndarray:
    """k for the k-th appearance of each row in ``rows`` (0 for the first)."""
    n = len(rows)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    first = np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    occurrence = np.empty(n, dtype=np.int64)
    occurrence[order] = np.arange(n) - group_start
    return occurrence


@dataclass
class _MeterLevel:
    """A round's meters' overall statistics before the round."""

    readings: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    level: np.ndarray
    """Usual absolute reading; the reading itself for a meter's first."""
    quantum: np.ndarray
    """The register's smallest step (0: continuous); an on/off meter's one level counts as a step."""
    step: np.ndarray
    """The step where readings reach several of them: a real register's resolution, what spreads
    are floored by (an on/off pump's level is not)."""
    spread: np.ndarray
    """Overall spread, never below 5% of the level or half a register step."""

    @property
    def denominator(self) -> np.ndarray:
        return LEVEL_SHARE * self.level + 1e-9


def relative(value: np.ndarray, reference: np.ndarray, level_share: np.ndarray) -> np.ndarray:
    """asinh of (value - reference) / (|reference| + a share of the level): sign-safe, near log for
    large ratios, linear near zero."""
    return np.arcsinh((value - reference) / (np.abs(reference) + level_share))


def register_zero_chance(usual: np.ndarray, spread: np.ndarray, quantum: np.ndarray) -> np.ndarray:
    """Chance that a counting register of resolution ``quantum`` shows no step in an interval whose
    usage is about ``usual`` give or take ``spread``: E[(1 - X)+] for X ~ N(usual, spread) in register
    steps (the carried fraction is uniform, so a flow of x steps is seen as zero with chance 1 - x)."""
    q = np.maximum(quantum, 1e-12)
    mu, sigma = usual / q, np.maximum(spread / q, 1e-6)
    z = (1.0 - mu) / sigma
    shortfall = (1.0 - mu) * ndtr(z) + sigma * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    # Only where the usual flow is a few steps: a normal's far tail says nothing of a register
    # that counts hundreds of steps an interval. (The tolerance keeps a baseline stored in float32
    # on the same side of the limit at any scale.)
    return np.where(mu <= NEAR_ZERO_STEPS * (1 + 1e-6), np.clip(shortfall, 0.0, 1.0), 0.0)


class FeatureExtractor:
    """Computes :data:`FEATURE_NAMES` for a batch and advances the meters' state."""

    def __init__(self, store: MeterStateStore | None = None, calendar: FleetCalendar = UTC_CALENDAR,
                 day_types: DayTypeProfile = UNKNOWN_DAY_TYPES,
                 fleet_tails: FleetTails = UNKNOWN_FLEET_TAILS) -> None:
        self.store = store or MeterStateStore()
        self.calendar = calendar
        self.day_types = day_types
        self.fleet_tails = fleet_tails

    def transform(self, batch: ReadingBatch, *, rows: np.ndarray | None = None,
                  correct_peers: bool = True) -> FeatureBatch:
        """Features of a batch, in each meter's order, with deviations its peers share discounted
        (see :func:`detection.peers.correct_for_peers`) unless ``correct_peers`` is false; ``rows``
        are the meters' store rows when the caller already looked them up."""
        n = len(batch)
        ts, kwh, interval_s = batch.timestamps_ms, batch.kwh, batch.interval_s
        nan = np.full(n, np.nan)
        fc_expected = nan if batch.expected is None else np.asarray(batch.expected, dtype=np.float64)
        fc_lower = nan if batch.lower is None else np.asarray(batch.lower, dtype=np.float64)
        fc_upper = nan if batch.upper is None else np.asarray(batch.upper, dtype=np.float64)
        if rows is None:
            rows = self.store.rows_for(batch.meter_ids)
        out = FeatureBatch.empty(n, fc_expected, fc_lower, fc_upper)
        out.round = occurrences(rows)
        slots = out.slots = self.calendar.slots(ts, interval_s)
        for idx in round_indices(out.round):
            self._round(idx, rows[idx], ts[idx], kwh[idx], interval_s[idx], slots.subset(idx), fc_expected[idx],
                        fc_lower[idx], fc_upper[idx], out)
        if correct_peers and n:
            # A late reading's interval has been scored already, with its peers; which of them share
            # its micro-batch now is chance, so it is judged alone, and it is nobody's peer.
            judged = out.scored & ~out.late
            correct_for_peers(out.matrix, PEER_COLUMNS, judged, batch.groups, ts, kwh)
            correct_zero_runs_for_peers(out.matrix, FEATURE_INDEX["zero_surprise"], judged, batch.groups, ts, kwh,
                                        out.zero_probability)
            out.level_shift &= ~shared_level_shifts(out.shift_pressure, judged & out.level_shift, judged,
                                                    batch.groups, ts)
        column = out.matrix[:, FEATURE_INDEX["forecast_residual"]]
        column[:] = forecast_deviation(column)
        return out

    def _meter_level(self, rows: np.ndarray, kwh: np.ndarray) -> _MeterLevel:
        sc = self.store.scalars
        readings = sc[rows, Scalar.READINGS]
        known = readings > 0
        mean = np.where(known, sc[rows, Scalar.MEAN], kwh)
        var = sc[rows, Scalar.VAR]
        level = np.where(known, sc[rows, Scalar.LEVEL], np.abs(kwh))
        quantum = sc[rows, Scalar.QUANTUM]
        step = np.where(sc[rows, Scalar.PEAK] >= QUANTUM_MIN_STEPS * quantum, quantum, 0.0)
        spread = np.sqrt(var + (0.05 * level) ** 2 + (0.5 * step) ** 2) + 1e-9
        return _MeterLevel(readings=readings, mean=mean, var=var, level=level, quantum=quantum, step=step,
                           spread=spread)

    def _round(self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, kwh: np.ndarray, interval_s: np.ndarray,
               slots: Slots, fc_expected: np.ndarray, fc_lower: np.ndarray, fc_upper: np.ndarray,
               out: FeatureBatch) -> None:
        """One round: at most one reading per meter, so each meter's state advances reading by reading."""
        store = self.store
        sc = store.scalars
        duplicate, late, stale = classify_arrivals(store, rows, ts)
        out.duplicate[idx], out.late[idx], out.stale[idx] = duplicate, late, stale

        interval_h = interval_s / 3600.0
        meter = self._meter_level(rows, kwh)
        base = slot_baseline(store, rows, slots, meter.mean, meter.var, meter.level, meter.step, self.day_types)
        usual, spread = base.usual, base.spread
        denominator = meter.denominator + meter.step

        # Gaps and catch-ups: what arrives after missing intervals.
        has_history = meter.readings > 0
        since_last = (ts - store.last_ts[rows]) / (interval_s * 1000.0)
        contiguous = has_history & ~late & (since_last <= CONTIGUOUS_INTERVALS)
        gap = np.where(has_history & ~late & ~contiguous, np.round(since_last) - 1, 0.0)
        owed = (gap + 1) * np.maximum(usual, 0.0)
        catch_up = (gap >= 1) & (kwh > usual + 3 * spread) & (kwh >= 0.4 * owed) & (kwh <= 2.5 * owed + 3 * spread)

        # The forecast: its band residual for the anomaly record, and the feature in the
        # baseline's spreads (the band of a young meter's forecast is too narrow to judge by).
        has_forecast = np.isfinite(fc_expected)
        narrowest = 0.05 * np.abs(fc_expected) + meter.denominator
        half_band = np.where(has_forecast, np.maximum((fc_upper - fc_lower) / 2.0, narrowest), 1.0)
        band_residual = np.where(has_forecast, (kwh - fc_expected) / half_band, np.nan)
        forecast_residual = np.where(has_forecast, np.clip((kwh - fc_expected) / spread, -FEATURE_CLIP, FEATURE_CLIP),
                                     np.nan)

        # Change from the previous reading (clipped), and a clipped copy of this one for what follows.
        # Habits: a large load this meter has drawn again and again in the last days (a car on the
        # charger, an irrigation pump in season) lies within its usual range, within HABIT_RANGE of it.
        habit_level, habit_count = sc[rows, Scalar.HABIT_LEVEL], sc[rows, Scalar.HABIT_COUNT]
        hours_of_history = meter.readings * interval_h
        excursion = (kwh - usual) >= DEVIATION_EXCURSION * base.spread_up
        # A habit is a load drawn on several occasions (nights, pump runs), not one long event's many readings:
        # an excursion begins an occasion unless one goes on, and it goes on while readings stay well up.
        going_on = contiguous & (sc[rows, Scalar.IN_OCCASION] > 0)
        occasion = excursion & ~going_on
        in_occasion = excursion | (going_on & ((kwh - usual) >= OCCASION_END * base.spread_up))
        # A meter waking from a dormant spell (a pump's first run of the season, heating back in autumn, a
        # holiday home occupied again) has no baseline for its load; the load it wakes with starts a habit.
        waking = occasion & (sc[rows, Scalar.ZERO_LONG] >= DORMANT_ZERO_SHARE) \
            & (hours_of_history >= DORMANT_DAYS * 24)
        habit_level = np.where(waking, np.maximum(habit_level, kwh), habit_level)
        habitual = ((habit_count >= HABIT_MIN_COUNT) | waking) & (kwh > usual) \
            & (kwh * HABIT_RANGE >= habit_level) & (kwh <= HABIT_RANGE * habit_level)
        spread_up = np.where(habitual, np.maximum(base.spread_up, (habit_level - usual) / HABIT_SPREADS),
                             base.spread_up)
        # Until its habits can show (a week), a meter may do what the fleet's meters do at this hour: the
        # fleet's upper tail stands in for a habit of its own.
        young = hours_of_history < HABIT_DAYS * 24
        fleet_upper = self.fleet_tails.upper[slots.hour_of_day % 24] * meter.level
        spread_up = np.where(young, np.maximum(spread_up, fleet_upper / HABIT_SPREADS), spread_up)
        deviation = np.clip((kwh - usual) / np.where(kwh >= usual, spread_up, base.spread_down),
                            -FEATURE_CLIP, FEATURE_CLIP)
        clean_z = np.where(catch_up, 0.0, np.clip(deviation, -CLEAN_SPREADS, CLEAN_SPREADS))
        clean = usual + clean_z * spread
        change = np.where(contiguous, (kwh - sc[rows, Scalar.LAST_CLEAN]) / meter.spread, 0.0)

        repeat_run, repeat_probability = self._repeats(rows, kwh, contiguous, meter)
        repeat_surprise = np.where(repeat_run > 1, (repeat_run - 1) * -np.log10(repeat_probability), 0.0)
        is_zero = np.abs(kwh) <= 1e-9
        zero_run = np.where(is_zero, np.where(contiguous, sc[rows, Scalar.ZERO_RUN] + 1, 1.0), 0.0)
        zero_probability = self._zero_probability(rows, base, meter)
        stay = (sc[rows, Scalar.ZERO_STAYS] + ZERO_STAY_PRIOR[0]) / (sc[rows, Scalar.ZERO_TRIALS] + sum(ZERO_STAY_PRIOR))
        # A zero after a zero is at least as likely as a zero at all here: zeros come in runs (a warm
        # afternoon, a closed day), never less often after one another than on their own.
        stay = np.maximum(stay, zero_probability)
        # On a counting register, the runs its zeros usually make are made where zeros are usual (warm
        # afternoons at low flow); where one is several times less likely than over the meter's month,
        # the register would have to stand still against the flow, and a run goes on that much less
        # readily. (An on/off meter, a pump, skips a whole run when it skips: its runs are left alone.)
        zero_long = np.maximum(sc[rows, Scalar.ZERO_LONG], ZERO_PROBABILITY_FLOOR)
        stay = np.where(meter.step > 0, np.maximum(stay * np.minimum(zero_probability / zero_long, 1.0),
                                                   zero_probability), stay)
        zero_surprise = np.where(zero_run > 0, -np.log10(zero_probability)
                                 - np.maximum(zero_run - 1, 0) * np.log10(np.clip(stay, 1e-3, 0.999)), 0.0)

        window_pos, window_deviation, window_variability = self._window(rows, clean, clean_z, meter)

        # Slow averages, for drift: of the clipped deviations (the feature), and of usage and its
        # baseline (the sentence's ratio).
        drift_alpha = np.minimum(interval_s / (DRIFT_DAYS * 86400.0), 1.0)
        drift = np.where(has_history, sc[rows, Scalar.DRIFT_Z], 0.0)
        drift = drift + drift_alpha * (clean_z - drift)
        drift_observed = np.where(has_history, sc[rows, Scalar.DRIFT_OBSERVED], kwh)
        drift_expected = np.where(has_history, sc[rows, Scalar.DRIFT_EXPECTED], usual)
        drift_observed = drift_observed + drift_alpha * (clean - drift_observed)
        drift_expected = drift_expected + drift_alpha * (usual - drift_expected)

        self._write_matrix(out.matrix, idx, base, deviation, relative(kwh, usual, denominator),
                           np.clip(change, -FEATURE_CLIP, FEATURE_CLIP), window_deviation, window_variability,
                           repeat_surprise, zero_surprise, drift, slots, forecast_residual)
        skip = duplicate | stale
        if skip.any():
            out.matrix[idx[skip]] = 0.0

        out.band_residual[idx] = band_residual
        out.baseline[idx] = usual
        out.spread[idx] = spread
        out.level[idx] = meter.level
        out.quantum[idx] = meter.quantum
        out.slot_observations[idx] = base.observations
        out.borrowed[idx] = base.borrowed
        out.repeat_run[idx] = repeat_run
        out.zero_run[idx] = zero_run
        out.zero_probability[idx] = zero_probability
        out.slot_labels[idx] = slots.hour_of_week
        out.cold[idx] = hours_of_history < WARMUP_DAYS * 24
        out.history_hours[idx] = hours_of_history
        out.drift_ratio[idx] = (drift_observed + denominator) / (drift_expected + denominator)
        out.gap_intervals[idx] = gap
        out.catch_up[idx] = catch_up

        # Every scored reading (late ones too) is remembered, so it is never scored twice; only
        # new, in-order readings advance the state.
        remember = ~(duplicate | stale)
        if remember.any():
            remember_scored(store, rows[remember], ts[remember])
        advance = ~(duplicate | stale | late)
        if not advance.any():
            return
        a = advance
        u = rows[a]
        learn = a & ~catch_up  # a catch-up carries several intervals' energy: not one slot's usage
        if learn.any():
            # the meter's first reading has no overall statistics yet: nothing to cap it by
            first_cap = np.where(meter.readings[learn] > 0, meter.mean[learn] + 4 * meter.spread[learn], np.inf)
            update_baseline(store, rows[learn], slots.subset(learn), kwh[learn], spread[learn], first_cap,
                            interval_s[learn])
        self._learn_meter(rows, kwh, a, learn, meter, contiguous, repeat_run, repeat_surprise, is_zero, zero_surprise,
                          interval_s)
        keep = np.exp(-interval_s[a] / (HABIT_DAYS * 86400.0))
        seen = (excursion & learn)[a]
        new_occasion = (occasion & learn)[a]
        sc[u, Scalar.IN_OCCASION] = (in_occasion & learn)[a]
        sc[u, Scalar.HABIT_LEVEL] = np.where(seen, np.where(habit_count[a] < 0.05, kwh[a],
                                                            np.maximum(kwh[a], habit_level[a]
                                                                       + HABIT_ALPHA * (kwh[a] - habit_level[a]))),
                                             habit_level[a])
        sc[u, Scalar.HABIT_COUNT] = np.where(waking[a], np.maximum(habit_count[a] * keep + 1.0, HABIT_MIN_COUNT),
                                             habit_count[a] * keep + new_occasion)
        sc[u, Scalar.LAST_KWH] = kwh[a]
        sc[u, Scalar.LAST_CLEAN] = clean[a]
        sc[u, Scalar.INTERVAL] = interval_s[a]
        sc[u, Scalar.READINGS] = meter.readings[a] + 1
        sc[u, Scalar.UNCHANGED_RUN] = repeat_run[a]
        sc[u, Scalar.ZERO_RUN] = zero_run[a]
        sc[u, Scalar.DRIFT_Z] = drift[a]
        sc[u, Scalar.DRIFT_OBSERVED] = drift_observed[a]
        sc[u, Scalar.DRIFT_EXPECTED] = drift_expected[a]
        store.window[u, window_pos[a]] = clean[a]
        store.window_z[u, window_pos[a]] = clean_z[a]
        sc[u, Scalar.WINDOW_POS] = (window_pos[a] + 1) % WINDOW
        store.last_ts[u] = ts[a]
        self._follow_level(idx, rows, ts, kwh, usual, deviation, denominator, interval_h, learn & ~out.cold[idx],
                           out)

    def _repeats(self, rows: np.ndarray, kwh: np.ndarray, contiguous: np.ndarray,
                 meter: _MeterLevel) -> tuple[np.ndarray, np.ndarray]:
        """(run of identical readings including this one, probability of a repeat at this level)."""
        sc = self.store.scalars
        last = sc[rows, Scalar.LAST_KWH]
        same = contiguous & (np.abs(kwh - last) <= 1e-9 + 1e-6 * np.abs(kwh)) & (np.abs(kwh) > 1e-9)
        previous_run = np.maximum(sc[rows, Scalar.UNCHANGED_RUN], 1.0)
        run = np.where(same, previous_run + 1, 0.0)
        low = (meter.quantum > 0) & (np.abs(last) <= NEAR_ZERO_STEPS * meter.quantum)
        (a_low, b_low), (a_high, b_high) = REPEAT_PRIOR["low"], REPEAT_PRIOR["high"]
        p_low = (sc[rows, Scalar.REPEAT_HITS_LOW] + a_low) / (sc[rows, Scalar.REPEAT_TRIALS_LOW] + a_low + b_low)
        p_high = (sc[rows, Scalar.REPEAT_HITS_HIGH] + a_high) / (sc[rows, Scalar.REPEAT_TRIALS_HIGH] + a_high + b_high)
        return run, np.clip(np.where(low, p_low, p_high), 1e-4, 0.999)

    def _zero_probability(self, rows: np.ndarray, base: SlotBaseline, meter: _MeterLevel) -> np.ndarray:
        """How likely a zero reading is now: the highest of the slot's share of zeros, a new zero regime
        of the meter (its zero share of the last days above that of the last month: a heating season
        ending turns every hour to zero within days), what a counting register shows at this flow,
        and a zero that lies within the hour's usual range (its 10% quantile near zero: a net meter's
        noon). Not the meter's zero share as such: a gas meter idle every spring night may still not
        read zero on a cold morning."""
        sc = self.store.scalars
        regime = sc[rows, Scalar.ZERO_RECENT] - sc[rows, Scalar.ZERO_LONG]
        recent = np.where(regime >= ZERO_REGIME_MIN, regime, 0.0)
        slot = np.where(np.isfinite(base.zero_share), base.zero_share, 0.0)
        # A counting register's flow now is the slot's usual scaled by the meter's recent level (its
        # slow average of usage over that of its baselines, at most 1): in a warm spell a heating
        # meter's evening flow is a fraction of its winter usual, and so zero more often.
        lately = (sc[rows, Scalar.DRIFT_OBSERVED] + meter.denominator) / (sc[rows, Scalar.DRIFT_EXPECTED]
                                                                         + meter.denominator)
        lately = np.where(meter.readings > 0, np.clip(lately, 0.0, 1.0), 1.0)
        register = np.where(meter.quantum > 0, register_zero_chance(np.abs(base.usual) * lately,
                                                                     base.spread * np.sqrt(lately), meter.quantum), 0.0)
        within = np.where(base.low_quantile <= NEAR_ZERO_LEVEL * meter.level, 0.5, 0.0)
        young = np.where(base.day_type_seen, ZERO_PROBABILITY_FLOOR, 10 * ZERO_PROBABILITY_FLOOR)
        return np.clip(np.maximum.reduce([slot, recent, register, within, young]), 1e-6, 0.999)

    def _learn_meter(self, rows: np.ndarray, kwh: np.ndarray, a: np.ndarray, learn: np.ndarray, meter: _MeterLevel,
                     contiguous: np.ndarray, repeat_run: np.ndarray, repeat_surprise: np.ndarray, is_zero: np.ndarray,
                     zero_surprise: np.ndarray, interval_s: np.ndarray) -> None:
        """Advance the meter's overall statistics, resolution, repeat habits and zero regime."""
        sc = self.store.scalars
        u = rows[a]
        n = meter.readings[a]
        alpha = np.maximum(1.0 / (n + 1.0), 0.01)
        x = np.where(learn[a], kwh[a], sc[u, Scalar.MEAN])  # a catch-up leaves the level alone
        mean = np.where(n > 0, sc[u, Scalar.MEAN], x)
        # Readings are clipped to 6 of the meter's spreads, unless it has none yet: a gas meter whose
        # first days read zero must still learn from its first cubic metre.
        bound = np.where(meter.var[a] > 0, 6 * meter.spread[a], np.abs(x - mean) + 1e-9)
        delta = np.clip(x, mean - bound, mean + bound) - mean
        sc[u, Scalar.MEAN] = mean + alpha * delta
        sc[u, Scalar.VAR] = np.where(n > 0, (1 - alpha) * (sc[u, Scalar.VAR] + alpha * delta * delta), 0.0)
        level = np.where(n > 0, sc[u, Scalar.LEVEL], np.abs(x))
        sc[u, Scalar.LEVEL] = level + alpha * (np.minimum(np.abs(x), level + bound) - level)
        # Resolution: the smallest step between readings, and the smallest non-zero reading.
        last = sc[u, Scalar.LAST_KWH]
        step = np.where(contiguous[a], np.round(np.abs(kwh[a] - last), 9), 0.0)
        magnitude = np.round(np.abs(kwh[a]), 9)
        q = sc[u, Scalar.QUANTUM]
        for candidate in (step, magnitude):
            usable = candidate > 1e-6 * np.maximum(level, 1e-9)
            q = np.where(usable & ((q == 0) | (candidate < q)), candidate, q)
        sc[u, Scalar.QUANTUM] = q
        sc[u, Scalar.PEAK] = np.maximum(np.abs(x), sc[u, Scalar.PEAK] * PEAK_MEMORY)
        # Repeats, by the level of the reading repeated, unless the run is already an anomaly.
        counted = contiguous[a] & (np.abs(last) > 1e-9) & (repeat_surprise[a] < SURPRISE_LEARN_LIMIT)
        low = (meter.quantum[a] > 0) & (np.abs(last) <= NEAR_ZERO_STEPS * meter.quantum[a])
        hit = (repeat_run[a] > 1).astype(float)
        for trials, hits, bucket in ((Scalar.REPEAT_TRIALS_LOW, Scalar.REPEAT_HITS_LOW, low),
                                     (Scalar.REPEAT_TRIALS_HIGH, Scalar.REPEAT_HITS_HIGH, ~low)):
            take = counted & bucket
            sc[u, trials] = np.where(take, REPEAT_MEMORY * sc[u, trials] + 1.0, sc[u, trials])
            sc[u, hits] = np.where(take, REPEAT_MEMORY * sc[u, hits] + hit, sc[u, hits])
        # Zero runs: a zero reading followed by the next one; did the run go on? Not learnt once the
        # run is an anomaly (an outage does not teach the meter that outages last).
        after_zero = contiguous[a] & (np.abs(last) <= 1e-9) & (zero_surprise[a] < SURPRISE_LEARN_LIMIT)
        sc[u, Scalar.ZERO_TRIALS] = np.where(after_zero, REPEAT_MEMORY * sc[u, Scalar.ZERO_TRIALS] + 1.0,
                                             sc[u, Scalar.ZERO_TRIALS])
        sc[u, Scalar.ZERO_STAYS] = np.where(after_zero, REPEAT_MEMORY * sc[u, Scalar.ZERO_STAYS] + is_zero[a],
                                            sc[u, Scalar.ZERO_STAYS])
        for column, days in ((Scalar.ZERO_RECENT, ZERO_REGIME_DAYS), (Scalar.ZERO_LONG, ZERO_LONG_DAYS)):
            zero_alpha = np.maximum(1.0 / (n + 1.0), np.minimum(interval_s[a] / (days * 86400.0), 1.0))
            share = sc[u, column]
            sc[u, column] = share + zero_alpha * (is_zero[a].astype(float) - share)

    def _window(self, rows: np.ndarray, clean: np.ndarray, clean_z: np.ndarray,
                meter: _MeterLevel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ring position, mean deviation in spreads, log variability) of the recent window.

        The window is the previous ``WINDOW - 1`` (clipped) readings plus this one; the ring's
        order does not matter for a mean and a spread, only how many of its slots hold data.
        """
        store = self.store
        pos = store.scalars[rows, Scalar.WINDOW_POS].astype(np.int64) % WINDOW
        values = store.window[rows].copy()
        deviations = store.window_z[rows].copy()
        filled = np.minimum(meter.readings, WINDOW - 1).astype(np.int64)
        r = np.arange(len(rows))
        values[r, pos] = clean
        deviations[r, pos] = clean_z
        valid = (np.arange(WINDOW)[None, :] < (filled + 1)[:, None])
        counts = valid.sum(axis=1)
        mean = np.where(valid, values, 0.0).sum(axis=1) / counts
        mean_z = np.where(valid, deviations, 0.0).sum(axis=1) / counts
        mean_square = np.where(valid, values**2, 0.0).sum(axis=1) / counts
        std = np.sqrt(np.maximum(mean_square - mean**2, 0.0))
        variability = np.where(counts >= 3, np.log((std + 0.01 * meter.level + 0.25 * meter.step + 1e-9)
                                                    / meter.spread), 0.0)
        return pos, mean_z, variability

    def _follow_level(self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, kwh: np.ndarray, usual: np.ndarray,
                      deviation: np.ndarray, denominator: np.ndarray, interval_h: np.ndarray, take: np.ndarray,
                      out: FeatureBatch) -> None:
        """The level-shift sums (see the module docstring); a crossing moves the meter's level
        (:attr:`Scalar.LOG_LEVEL`), which its slot baselines are read at."""
        if not take.any():
            return
        sc = self.store.scalars
        u = rows[take]
        hours = np.minimum(interval_h[take], SHIFT_READING_HOURS)
        # A baseline near zero says nothing of a level, nor does one a counting register shows in a few steps.
        material = (np.abs(usual[take]) >= LEVEL_SHARE * sc[u, Scalar.LEVEL]) \
            & (np.abs(usual[take]) >= NEAR_ZERO_STEPS * sc[u, Scalar.QUANTUM])
        rel = np.where(material, (kwh[take] - usual[take]) / (np.abs(usual[take]) + denominator[take]), 0.0)
        capped = np.where(material, np.clip(deviation[take], -SHIFT_CAP, SHIFT_CAP), 0.0)
        up = np.maximum(0.0, sc[u, Scalar.SHIFT_UP] + (capped - SHIFT_SLACK) * hours)
        down = np.maximum(0.0, sc[u, Scalar.SHIFT_DOWN] + (-capped - SHIFT_SLACK) * hours)
        running = (up > 0) | (down > 0)
        starting = running & (sc[u, Scalar.SHIFT_HOURS] == 0)
        total = np.where(running, sc[u, Scalar.SHIFT_SUM] + np.clip(rel, -0.95, 5.0) * hours, 0.0)
        span = np.where(running, sc[u, Scalar.SHIFT_HOURS] + hours, 0.0)
        since = np.where(starting, ts[take], np.where(running, sc[u, Scalar.SHIFT_SINCE], 0.0))
        shifted = (up >= SHIFT_THRESHOLD) | (down >= SHIFT_THRESHOLD)
        out.shift_pressure[idx[take]] = np.clip((up - down) / SHIFT_THRESHOLD, -1.0, 1.0)
        factor = np.where(shifted, np.clip(1.0 + total / np.maximum(span, 1e-9), 0.05, 20.0), 1.0)
        if shifted.any():
            s = u[shifted]
            change = np.log(factor[shifted])
            # Which shifts an operator hears of: material ones, and not the way back from the last,
            # which restores the level before it exactly.
            previous = sc[s, Scalar.LAST_SHIFT]
            recent = (previous != 0) & (ts[take][shifted] - sc[s, Scalar.LAST_SHIFT_AT] <= RETURN_DAYS * 86_400_000)
            undone = recent & (np.sign(change) == -np.sign(previous))
            change = np.where(undone, -previous, change)
            reported = (np.abs(change) >= np.log(SHIFT_MATERIAL)) & ~undone
            sc[s, Scalar.LAST_SHIFT] = np.where(reported, change, np.where(undone, 0.0, previous))
            sc[s, Scalar.LAST_SHIFT_AT] = np.where(reported, ts[take][shifted], sc[s, Scalar.LAST_SHIFT_AT])
            f = np.exp(change)
            sc[s, Scalar.LOG_LEVEL] += change
            for column in (Scalar.MEAN, Scalar.DRIFT_EXPECTED):
                sc[s, column] *= f
            sc[s, Scalar.VAR] *= f * f
            sc[s, Scalar.LEVEL] *= f
            sc[s, Scalar.DRIFT_OBSERVED] = sc[s, Scalar.DRIFT_EXPECTED]
            sc[s, Scalar.DRIFT_Z] = 0.0
            self.store.window_z[s] = 0.0
            at = idx[take][shifted][reported]
            out.level_shift[at] = True
            out.shift_factor[at] = f[reported]
            out.shift_since[at] = since[shifted][reported].astype(np.int64)
            up[shifted], down[shifted], total[shifted], span[shifted], since[shifted] = 0.0, 0.0, 0.0, 0.0, 0.0
        sc[u, Scalar.SHIFT_UP], sc[u, Scalar.SHIFT_DOWN] = up, down
        sc[u, Scalar.SHIFT_SUM], sc[u, Scalar.SHIFT_HOURS], sc[u, Scalar.SHIFT_SINCE] = total, span, since

    @staticmethod
    def _write_matrix(m: np.ndarray, idx: np.ndarray, base: SlotBaseline, deviation: np.ndarray,
                      relative_deviation: np.ndarray, change: np.ndarray, window_deviation: np.ndarray,
                      window_variability: np.ndarray, repeat_surprise: np.ndarray, zero_surprise: np.ndarray,
                      drift: np.ndarray, slots: Slots, forecast_residual: np.ndarray) -> None:
        # An hour-of-week slot never seen yet is estimated from the hour of day alone, which
        # knows nothing of weekly patterns (a school on its first Saturday): usage *below* such
        # an estimate is discounted until the slot has been seen, usage above it is not.
        slot_confidence = 0.25 + 0.75 * base.week_slot_count / (base.week_slot_count + 1.0)

        def discount_dips(values: np.ndarray) -> np.ndarray:
            return np.where(values < 0, values * slot_confidence, values)

        f = FEATURE_INDEX
        m[idx, f["deviation"]] = discount_dips(deviation)
        m[idx, f["relative_deviation"]] = discount_dips(relative_deviation)
        m[idx, f["change"]] = change
        m[idx, f["window_deviation"]] = discount_dips(window_deviation)
        m[idx, f["window_variability"]] = window_variability
        m[idx, f["repeat_surprise"]] = repeat_surprise
        m[idx, f["zero_surprise"]] = zero_surprise
        m[idx, f["drift"]] = discount_dips(drift)
        m[idx, f["hour_sin"]] = np.sin(2 * np.pi * slots.day_phase)
        m[idx, f["hour_cos"]] = np.cos(2 * np.pi * slots.day_phase)
        m[idx, f["dow_sin"]] = np.sin(2 * np.pi * slots.week_phase)
        m[idx, f["dow_cos"]] = np.cos(2 * np.pi * slots.week_phase)
        m[idx, f["forecast_residual"]] = forecast_residual
