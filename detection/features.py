"""The features the detector scores, computed for a whole batch at once, and the state they advance.

The same code serves the stream worker (one micro-batch of messages at a time) and every
offline replay (``wattsup detect``, training, evaluation), so offline results are exactly what
the stream would have said. A batch may hold several readings of one meter; they are taken in
*rounds* (the k-th reading of every meter in round k), which keeps each meter's readings in order.

Features (all scale-free: a 0.1 kWh household and a 500 kWh building give the same values for
the same relative behaviour, and slots adapt to the meter's interval, 5-minute to daily):

==============================  ==================================================================
``usage_vs_baseline``           log of usage over the baseline (usual usage) for this hour of the week
``baseline_z``                  (usage - baseline) / the slot's usual spread
``change_z``                    change from the previous reading / the meter's usual spread (0 after a gap)
``window_vs_baseline``          log of the mean of the last readings over their baselines' mean
``window_variability``          log of the recent spread over the meter's usual spread (stuck: very low)
``unchanged_hours``             log(1 + hours the reading has not changed), when usage is not zero
``zero_hours``                  log(1 + hours of zero usage), weighted by how much usage is usual
``drift``                       log of a slow (3-day) average of usage over the slow average of baseline
``hour_sin``, ``hour_cos``      time of day
``dow_sin``, ``dow_cos``        day of week
``forecast_residual``           signed log(1 + |usage - forecast| / the slot's usual spread); NaN without a forecast
==============================  ==================================================================

The baseline (:mod:`detection.baseline`) never uses the forecast: a forecast (Prophet's expected
usage and band, joined by the stream) adds its own feature, ``forecast_residual``, so the other
features mean the same whether a forecast exists or not.

Missing and late readings, the documented policy:

* a gap (the previous reading is more than 1.5 intervals back) resets ``change_z`` and the
  unchanged/zero run counters, which only count consecutive readings;
* duplicates, late and stale readings are told apart by
  :func:`detection.meter_state.classify_arrivals`: a duplicate is never scored again, a late
  reading is scored without moving the state, a stale one is counted, not scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detection.baseline import SlotBaseline, slot_baseline, update_baseline
from detection.calendar import Slots, time_slots
from detection.meter_state import (
    WINDOW,
    MeterStateStore,
    Scalar,
    classify_arrivals,
    remember_scored,
)
from detection.peers import PEER_FEATURES, correct_for_peers
from detection.readings import ReadingBatch

FEATURE_NAMES: tuple[str, ...] = (
    "usage_vs_baseline",
    "baseline_z",
    "change_z",
    "window_vs_baseline",
    "window_variability",
    "unchanged_hours",
    "zero_hours",
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
FEATURE_CLIP = 50.0
"""Spread-scaled features are clipped here: beyond 50 spreads more tells the forest nothing."""


@dataclass
class FeatureBatch:
    """Features of one batch plus what explanations need, row-aligned with the input."""

    matrix: np.ndarray
    """[n, len(FEATURE_NAMES)] float64; rows of duplicates and stale readings are zeros."""
    expected: np.ndarray
    """The forecast's expected usage (kWh) per reading; NaN where no forecast covers it."""
    baseline: np.ndarray
    """The meter's usual usage (kWh) for the reading's hour-of-week slot, from its own history."""
    spread: np.ndarray
    unchanged_intervals: np.ndarray
    zero_hours: np.ndarray
    slot_labels: np.ndarray
    """hour-of-week slot (0..167, Monday 00:00 = 0) or day of week for daily data."""
    hourly_expected: np.ndarray
    """Baseline usage in kWh per hour, for "no consumption where X kWh/h is usual"."""
    usual_share: np.ndarray
    """This slot's baseline over the meter's overall mean: how much usage is usual right now."""
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
    window_ratio: np.ndarray
    round: np.ndarray
    """k for the k-th reading of its meter in this batch: rows of one round are one per meter."""

    @classmethod
    def empty(cls, n: int, expected: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> FeatureBatch:
        zeros, flags = np.zeros(n), np.zeros(n, dtype=bool)
        return cls(
            matrix=np.zeros((n, len(FEATURE_NAMES))), expected=expected.copy(), baseline=zeros.copy(),
            spread=zeros.copy(), unchanged_intervals=zeros.copy(), zero_hours=zeros.copy(),
            slot_labels=np.zeros(n, dtype=np.int64), hourly_expected=zeros.copy(), usual_share=zeros.copy(),
            duplicate=flags.copy(), stale=flags.copy(), late=flags.copy(), cold=flags.copy(),
            history_hours=zeros.copy(), lower=lower.copy(), upper=upper.copy(), band_residual=np.full(n, np.nan),
            drift_ratio=np.ones(n), window_ratio=np.ones(n), round=np.zeros(n, dtype=np.int64),
        )

    @property
    def scored(self) -> np.ndarray:
        return ~(self.duplicate | self.stale)


def forecast_deviation(spreads: np.ndarray) -> np.ndarray:
    """The forecast residual as the detector sees it: signed log of one plus the miss in spreads.

    The log keeps one huge miss (a young meter's forecast near zero) from dwarfing the other
    features, as ``usage_vs_baseline`` is a log ratio for the same reason; NaN (no forecast) stays.
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
    eps: np.ndarray
    """A tenth of the mean: keeps ratios of near-zero usage finite and modest."""
    spread: np.ndarray
    """Overall spread, never below 5% of the mean."""


class FeatureExtractor:
    """Computes :data:`FEATURE_NAMES` for a batch and advances the meters' state."""

    def __init__(self, store: MeterStateStore | None = None) -> None:
        self.store = store or MeterStateStore()

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
        for idx in round_indices(out.round):
            self._round(idx, rows[idx], ts[idx], kwh[idx], interval_s[idx], fc_expected[idx], fc_lower[idx],
                        fc_upper[idx], out)
        if correct_peers and n:
            # A late reading's interval has been scored already, with its peers; which of them share
            # its micro-batch now is chance, so it is judged alone, and it is nobody's peer.
            correct_for_peers(out.matrix, PEER_COLUMNS, out.scored & ~out.late, batch.groups, ts, kwh)
        column = out.matrix[:, FEATURE_INDEX["forecast_residual"]]
        column[:] = forecast_deviation(column)
        return out

    def _meter_level(self, rows: np.ndarray, kwh: np.ndarray) -> _MeterLevel:
        sc = self.store.scalars
        readings = sc[rows, Scalar.READINGS]
        mean = np.where(readings > 0, sc[rows, Scalar.MEAN], kwh)
        var = sc[rows, Scalar.VAR]
        return _MeterLevel(readings=readings, mean=mean, var=var, eps=0.1 * mean + 1e-9,
                           spread=np.sqrt(var + (0.05 * mean) ** 2) + 1e-9)

    def _round(self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, kwh: np.ndarray, interval_s: np.ndarray,
               fc_expected: np.ndarray, fc_lower: np.ndarray, fc_upper: np.ndarray, out: FeatureBatch) -> None:
        """One round: at most one reading per meter, so each meter's state advances reading by reading."""
        store = self.store
        sc = store.scalars
        duplicate, late, stale = classify_arrivals(store, rows, ts)
        out.duplicate[idx], out.late[idx], out.stale[idx] = duplicate, late, stale

        interval_h = interval_s / 3600.0
        slots = time_slots(ts, interval_s)
        meter = self._meter_level(rows, kwh)
        base = slot_baseline(store, rows, slots, meter.mean, meter.var)
        baseline, spread = base.usual, base.spread

        # The forecast: its band residual for the anomaly record, and the feature in the
        # baseline's spreads (the band of a young meter's forecast is too narrow to judge by:
        # 3 days of history give Prophet a confident band), shaped by forecast_deviation once
        # peers have been accounted for.
        has_forecast = np.isfinite(fc_expected)
        narrowest = 0.05 * np.abs(fc_expected) + meter.eps
        half_band = np.where(has_forecast, np.maximum((fc_upper - fc_lower) / 2.0, narrowest), 1.0)
        band_residual = np.where(has_forecast, (kwh - fc_expected) / half_band, np.nan)
        forecast_residual = np.where(has_forecast, np.clip((kwh - fc_expected) / spread, -FEATURE_CLIP, FEATURE_CLIP),
                                     np.nan)

        # Runs: change from the previous reading, unchanged and zero readings in a row.
        last_kwh = sc[rows, Scalar.LAST_KWH]
        contiguous = ((meter.readings > 0) & ~late
                      & (ts - store.last_ts[rows] <= CONTIGUOUS_INTERVALS * interval_s * 1000))
        change_z = np.where(contiguous, (kwh - last_kwh) / meter.spread, 0.0)
        same_as_last = np.abs(kwh - last_kwh) <= 1e-9 + 1e-6 * np.abs(kwh)
        unchanged = np.where(contiguous & same_as_last & (kwh > 0), sc[rows, Scalar.UNCHANGED_RUN] + 1, 0.0)
        zero = np.where(kwh <= 1e-9, np.where(contiguous, sc[rows, Scalar.ZERO_RUN] + 1, 1.0), 0.0)

        window_pos, window_ratio, window_variability = self._window(rows, kwh, baseline, meter)

        # Slow averages of usage and baseline, for drift.
        drift_observed = np.where(meter.readings > 0, sc[rows, Scalar.DRIFT_OBSERVED], kwh)
        drift_expected = np.where(meter.readings > 0, sc[rows, Scalar.DRIFT_EXPECTED], baseline)
        drift_alpha = np.minimum(interval_s / (DRIFT_DAYS * 86400.0), 1.0)
        drift_observed = drift_observed + drift_alpha * (kwh - drift_observed)
        drift_expected = drift_expected + drift_alpha * (baseline - drift_expected)
        drift_ratio = (drift_observed + meter.eps) / (drift_expected + meter.eps)

        zero_hours = zero * interval_h
        hours_of_history = meter.readings * interval_h

        self._write_matrix(out.matrix, idx, kwh, base, meter, change_z, window_ratio, window_variability,
                           unchanged * interval_h, zero_hours, drift_ratio, slots, forecast_residual)
        skip = duplicate | stale
        if skip.any():
            out.matrix[idx[skip]] = 0.0

        out.band_residual[idx] = band_residual
        out.baseline[idx] = baseline
        out.spread[idx] = spread
        out.unchanged_intervals[idx] = unchanged
        out.zero_hours[idx] = zero_hours
        out.slot_labels[idx] = slots.hour_of_week
        out.hourly_expected[idx] = baseline / interval_h
        out.usual_share[idx] = baseline / (meter.mean + 1e-9)
        out.cold[idx] = hours_of_history < WARMUP_DAYS * 24
        out.history_hours[idx] = hours_of_history
        out.drift_ratio[idx] = drift_ratio
        out.window_ratio[idx] = window_ratio

        # Every scored reading (late ones too) is remembered, so it is never scored twice; only
        # new, in-order readings advance the state.
        remember = ~(duplicate | stale)
        if remember.any():
            remember_scored(store, rows[remember], ts[remember])
        advance = ~(duplicate | stale | late)
        if not advance.any():
            return
        u = rows[advance]
        # the meter's first reading has no overall statistics yet: nothing to cap it by
        first_cap = np.where(meter.readings[advance] > 0, meter.mean[advance] + 4 * meter.spread[advance], np.inf)
        update_baseline(store, u, slots.subset(advance), kwh[advance], spread[advance], first_cap)
        readings = sc[u, Scalar.READINGS]
        alpha = np.maximum(1.0 / (readings + 1.0), 0.01)
        mean = np.where(readings > 0, sc[u, Scalar.MEAN], kwh[advance])
        delta = np.clip(kwh[advance], 0, mean + 6 * meter.spread[advance]) - mean
        sc[u, Scalar.MEAN] = mean + alpha * delta
        sc[u, Scalar.VAR] = np.where(readings > 0, (1 - alpha) * (sc[u, Scalar.VAR] + alpha * delta * delta), 0.0)
        sc[u, Scalar.LAST_KWH] = kwh[advance]
        sc[u, Scalar.INTERVAL] = interval_s[advance]
        sc[u, Scalar.READINGS] = readings + 1
        sc[u, Scalar.UNCHANGED_RUN] = unchanged[advance]
        sc[u, Scalar.ZERO_RUN] = zero[advance]
        sc[u, Scalar.DRIFT_OBSERVED] = drift_observed[advance]
        sc[u, Scalar.DRIFT_EXPECTED] = drift_expected[advance]
        store.window[u, window_pos[advance]] = kwh[advance]
        store.window_expected[u, window_pos[advance]] = baseline[advance]
        sc[u, Scalar.WINDOW_POS] = (window_pos[advance] + 1) % WINDOW
        store.last_ts[u] = ts[advance]

    def _window(self, rows: np.ndarray, kwh: np.ndarray, baseline: np.ndarray,
                meter: _MeterLevel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ring position, level against baseline, log variability) of the recent window.

        The window is the previous ``WINDOW - 1`` readings plus this one; the ring's order does
        not matter for a mean and a spread, only how many of its slots hold data.
        """
        store = self.store
        pos = store.scalars[rows, Scalar.WINDOW_POS].astype(np.int64) % WINDOW
        values = store.window[rows].copy()
        expected = store.window_expected[rows].copy()
        filled = np.minimum(meter.readings, WINDOW - 1).astype(np.int64)
        r = np.arange(len(rows))
        values[r, pos] = kwh
        expected[r, pos] = baseline
        valid = (np.arange(WINDOW)[None, :] < (filled + 1)[:, None])
        counts = valid.sum(axis=1)
        mean = np.where(valid, values, 0.0).sum(axis=1) / counts
        expected_sum = np.where(valid, expected, 0.0).sum(axis=1)
        mean_square = np.where(valid, values**2, 0.0).sum(axis=1) / counts
        std = np.sqrt(np.maximum(mean_square - mean**2, 0.0))
        ratio = (mean + meter.eps) / (expected_sum / counts + meter.eps)
        variability = np.where(counts >= 3, np.log((std + 0.01 * meter.mean + 1e-9) / meter.spread), 0.0)
        return pos, ratio, variability

    @staticmethod
    def _write_matrix(m: np.ndarray, idx: np.ndarray, kwh: np.ndarray, base: SlotBaseline, meter: _MeterLevel,
                      change_z: np.ndarray, window_ratio: np.ndarray, window_variability: np.ndarray,
                      unchanged_hours: np.ndarray, zero_hours: np.ndarray, drift_ratio: np.ndarray, slots: Slots,
                      forecast_residual: np.ndarray) -> None:
        baseline, eps = base.usual, meter.eps
        # An hour-of-week slot never seen yet is estimated from the hour of day alone, which
        # knows nothing of weekly patterns (a school on its first Saturday): usage *below* such
        # an estimate is discounted until the slot has been seen, usage above it is not.
        slot_confidence = 0.25 + 0.75 * base.week_slot_count / (base.week_slot_count + 1.0)

        def discount_dips(values: np.ndarray) -> np.ndarray:
            return np.where(values < 0, values * slot_confidence, values)

        f = FEATURE_INDEX
        m[idx, f["usage_vs_baseline"]] = discount_dips(np.log((kwh + eps) / (baseline + eps)))
        m[idx, f["baseline_z"]] = discount_dips(np.clip((kwh - baseline) / base.spread, -FEATURE_CLIP, FEATURE_CLIP))
        m[idx, f["change_z"]] = np.clip(change_z, -FEATURE_CLIP, FEATURE_CLIP)
        m[idx, f["window_vs_baseline"]] = discount_dips(np.log(window_ratio))
        m[idx, f["window_variability"]] = window_variability
        m[idx, f["unchanged_hours"]] = np.log1p(unchanged_hours)
        m[idx, f["zero_hours"]] = np.log1p(zero_hours) * np.clip(baseline / (meter.mean + 1e-9), 0.0, 1.0)
        m[idx, f["drift"]] = discount_dips(np.log(drift_ratio))
        m[idx, f["hour_sin"]] = np.sin(2 * np.pi * slots.day_phase)
        m[idx, f["hour_cos"]] = np.cos(2 * np.pi * slots.day_phase)
        m[idx, f["dow_sin"]] = np.sin(2 * np.pi * slots.week_phase)
        m[idx, f["dow_cos"]] = np.cos(2 * np.pi * slots.week_phase)
        m[idx, f["forecast_residual"]] = forecast_residual
