"""Per-meter state and the features the detector scores, computed for a whole micro-batch at once.

The same code runs in the Faust worker (one micro-batch of head-end messages at a time) and in
``wattsup detect`` (a CSV replayed in time order per meter, in chunks), so offline results are
exactly what the stream would have said.

State lives in a :class:`MeterStateStore`: one row per meter in flat numpy arrays, so a batch of
thousands of readings is handled with array operations, not a Python loop per reading. A batch
may hold several readings of one meter; they are processed in *rounds* (the k-th reading of
every meter in round k), which keeps each meter's readings in order.

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

The *baseline* blends an hour-of-week baseline with an hour-of-day baseline of the same
day type (weekday or weekend) by how many observations each has (hour-of-week needs a week to
fill; hour-of-day one day), both exponentially weighted so they follow seasons. Updates are
clipped to 4 spreads (a slot's first observation to the meter's mean plus 4 overall spreads),
so an anomaly moves the baseline little. The baseline features never use the forecast: a
forecast (Prophet's expected usage and band, joined by the stream) adds its own feature,
``forecast_residual``, so the other features mean the same whether a forecast exists or not.

Missing and late readings, the documented policy:

* a gap (the previous reading is more than 1.5 intervals back) resets ``change_z`` and the
  unchanged/zero run counters, which only count consecutive readings;
* a reading whose meter and timestamp were already seen (one of the meter's 32 newest scored
  timestamps) is a **duplicate**: it is not scored again and never yields a second anomaly;
* a **late** reading (older than the meter's newest, not yet seen) is scored against the
  baseline but does not update the meter's state, which has already moved past it;
* a reading older than all of the meter's 32 remembered timestamps is **stale**: it is
  counted, not scored (it was scored before a crash, or is too old to judge against today's state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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
F = {name: i for i, name in enumerate(FEATURE_NAMES)}

WINDOW = 4
"""Readings in the recent window (1 h of 15-minute data, 4 h of hourly, 4 days of daily)."""
SEEN = 32
"""Timestamps remembered per meter to recognise duplicates and late readings."""
HOW_SLOTS = 168
HOD_SLOTS = 48
"""Hour of day by day type: 0-23 weekdays (Monday-Friday), 24-47 weekends."""
WARMUP_DAYS = 1.0
"""History a meter needs before the model scores it; until then baseline rules do."""
_DAY_MS = 86_400_000
_WEEK_OFFSET_MS = 3 * _DAY_MS  # 1970-01-01 was a Thursday (day 3 when Monday is day 0)


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

    @property
    def scored(self) -> np.ndarray:
        return ~(self.duplicate | self.stale)


class MeterStateStore:
    """Per-meter state in flat arrays; rows are assigned on first sight and never move."""

    # float64 scalars per meter, by column
    S_LAST_KWH, S_INTERVAL, S_N, S_MEAN, S_VAR, S_UNCHANGED, S_ZERO, S_DRIFT_OBS, S_DRIFT_EXP, \
        S_SCORE_MEAN, S_SCORE_VAR, S_RING_POS = range(12)
    N_SCALARS = 12

    def __init__(self, capacity: int = 16384) -> None:
        self.index: dict[str, int] = {}
        self.meter_ids: list[str] = []
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        self.last_ts = np.full(capacity, np.iinfo(np.int64).min, dtype=np.int64)
        self.scalars = np.zeros((capacity, self.N_SCALARS))
        self.window = np.zeros((capacity, WINDOW))
        self.window_expected = np.zeros((capacity, WINDOW))
        self.seen = np.full((capacity, SEEN), np.iinfo(np.int64).min, dtype=np.int64)
        self.how = np.zeros((capacity, HOW_SLOTS, 3), dtype=np.float32)  # mean, var, count
        self.hod = np.zeros((capacity, HOD_SLOTS, 3), dtype=np.float32)

    def _grow(self, needed: int) -> None:
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        old = (self.last_ts, self.scalars, self.window, self.window_expected, self.seen, self.how, self.hod)
        n = len(self.meter_ids)
        self._alloc(capacity)
        for new, prev in zip((self.last_ts, self.scalars, self.window, self.window_expected, self.seen,
                              self.how, self.hod), old):
            new[:n] = prev[:n]

    def __len__(self) -> int:
        return len(self.meter_ids)

    def rows_for(self, meter_ids: list[str]) -> np.ndarray:
        index = self.index
        rows = np.empty(len(meter_ids), dtype=np.int64)
        for i, m in enumerate(meter_ids):
            row = index.get(m)
            if row is None:
                row = len(self.meter_ids)
                if row >= self.capacity:
                    self._grow(row + 1)
                index[m] = row
                self.meter_ids.append(m)
            rows[i] = row
        return rows

    # -- persistence of a group of meters (a feeder) ------------------------------------
    def export_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "last_ts": self.last_ts[rows], "scalars": self.scalars[rows], "window": self.window[rows],
            "window_expected": self.window_expected[rows], "seen": self.seen[rows],
            "how": self.how[rows], "hod": self.hod[rows],
        }

    def import_rows(self, meter_ids: list[str], arrays: dict[str, np.ndarray]) -> None:
        rows = self.rows_for(meter_ids)
        self.last_ts[rows] = arrays["last_ts"]
        self.scalars[rows] = arrays["scalars"]
        self.window[rows] = arrays["window"]
        self.window_expected[rows] = arrays["window_expected"]
        self.seen[rows] = arrays["seen"]
        self.how[rows] = arrays["how"]
        self.hod[rows] = arrays["hod"]


def _slots(ts_ms: np.ndarray, interval_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slot indices and time-of-day/day-of-week phases for each reading.

    A reading's timestamp ends its interval; its slot is the one the interval started in.
    """
    start = ts_ms - interval_s * 1000
    in_week = (start + _WEEK_OFFSET_MS) % (7 * _DAY_MS)
    dow = in_week // _DAY_MS
    hour = (in_week % _DAY_MS) // 3_600_000
    daily = interval_s >= 86_400
    how = np.where(daily, dow, dow * 24 + hour)
    weekend = dow >= 5
    hod = np.where(daily, 0, hour) + 24 * weekend
    day_phase = (in_week % _DAY_MS) / _DAY_MS
    week_phase = in_week / (7 * _DAY_MS)
    return how.astype(np.int64), hod.astype(np.int64), day_phase, week_phase


def _ew_update(stats: np.ndarray, rows: np.ndarray, slots: np.ndarray, value: np.ndarray,
               min_alpha: float, spread: np.ndarray, first_cap: np.ndarray) -> None:
    """Exponentially weighted mean/variance per (row, slot), clipped to 4 spreads.

    A slot's first observation has no spread of its own to be clipped by; it is capped at
    ``first_cap`` (the meter's overall mean plus 4 overall spreads), so an anomaly in a meter's
    first day does not become the baseline its next day is judged against.
    """
    mean = stats[rows, slots, 0].astype(np.float64)
    var = stats[rows, slots, 1].astype(np.float64)
    n = stats[rows, slots, 2].astype(np.float64)
    clipped = np.where(n > 0, np.clip(value, mean - 4 * spread, mean + 4 * spread), np.minimum(value, first_cap))
    alpha = np.maximum(1.0 / (n + 1.0), min_alpha)
    delta = clipped - mean
    mean = mean + alpha * delta
    var = np.where(n > 0, (1 - alpha) * (var + alpha * delta * delta), 0.0)
    stats[rows, slots, 0] = mean
    stats[rows, slots, 1] = var
    stats[rows, slots, 2] = np.minimum(n + 1, 1e6)


def forecast_deviation(spreads: np.ndarray) -> np.ndarray:
    """The forecast residual as the detector sees it: signed log of one plus the miss in spreads.

    The log keeps one huge miss (a young meter's forecast near zero) from dwarfing the other
    features, as ``usage_vs_baseline`` is a log ratio for the same reason; NaN (no forecast) stays.
    """
    return np.sign(spreads) * np.log1p(np.abs(spreads))


PEER_FEATURES = ("usage_vs_baseline", "baseline_z", "window_vs_baseline", "change_z", "forecast_residual")
"""Deviation features that move together when a whole feeder deviates at once."""
MIN_PEERS = 8
"""Readings of one group and interval needed before their median is trusted as a common mode."""


def correct_for_peers(fb: FeatureBatch, groups: np.ndarray, ts: np.ndarray, kwh: np.ndarray) -> None:
    """Discount deviations a reading shares with its peers (same feeder, same interval).

    When most meters of a feeder use more than their baseline at once, the cause is common:
    the first Saturday morning of a new meter's history (its hour-of-week slot not yet seen), a
    holiday, a heat wave, a clock change. Such a shift is not an anomaly of any one meter. For
    each deviation feature, the median over the group's readings of that interval is the common
    mode; a reading's deviation is shrunk towards zero by it when both point the same way, and
    left alone when they disagree (a meter that falls while its peers rise is still unusual).
    Readings of zero energy are never discounted: a feeder-wide outage is still an outage of
    every meter on it. Groups smaller than :data:`MIN_PEERS` are left alone.
    """
    scored = fb.scored & (kwh > 1e-9)
    if scored.sum() < MIN_PEERS:
        return
    idx = np.flatnonzero(scored)
    cols = [F[name] for name in PEER_FEATURES]
    frame = pd.DataFrame(fb.matrix[np.ix_(idx, cols)], columns=PEER_FEATURES)
    frame["_g"] = groups[idx]
    frame["_t"] = ts[idx]
    grouped = frame.groupby(["_g", "_t"], sort=False)
    size = grouped[PEER_FEATURES[0]].transform("size").to_numpy()
    common = grouped[list(PEER_FEATURES)].transform("median").to_numpy()
    enough = size >= MIN_PEERS
    if not enough.any():
        return
    values = frame[list(PEER_FEATURES)].to_numpy()
    same_way = (np.sign(values) == np.sign(common)) & enough[:, None]
    shrunk = np.sign(values) * np.maximum(np.abs(values) - np.abs(common), 0.0)
    fb.matrix[np.ix_(idx, cols)] = np.where(same_way, shrunk, values)


def round_indices(occurrence: np.ndarray) -> list[np.ndarray]:
    """Row indices of each round (ascending), found with one sort rather than a scan per round:
    a file of few meters with many readings each has as many rounds as readings per meter."""
    if len(occurrence) == 0:
        return []
    by_round = np.argsort(occurrence, kind="stable")
    ends = np.cumsum(np.bincount(occurrence))
    return [by_round[start:end] for start, end in zip(np.r_[0, ends[:-1]].tolist(), ends.tolist())]


def time_aligned_chunks(ts_sorted: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    """(start, end) slices of about ``chunk`` rows that never split one timestamp.

    Offline replays (training, ``wattsup detect``) cut a time-ordered file into batches; cutting
    between readings of the same interval would split a feeder's peer group, so cuts move to
    the next change of timestamp.
    """
    n = len(ts_sorted)
    bounds, start = [], 0
    while start < n:
        end = min(start + chunk, n)
        if end < n:
            end = int(np.searchsorted(ts_sorted, ts_sorted[end - 1], side="right"))
        bounds.append((start, end))
        start = end
    return bounds


class FeatureExtractor:
    """Computes :data:`FEATURE_NAMES` for a batch and advances the meters' state."""

    def __init__(self, store: MeterStateStore | None = None) -> None:
        self.store = store or MeterStateStore()

    def transform_batch(
        self,
        meter_ids: list[str],
        timestamps_ms: np.ndarray,
        kwh: np.ndarray,
        interval_s: np.ndarray,
        expected: np.ndarray | None = None,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        peer_groups: list[str] | np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> FeatureBatch:
        """Features of a batch, in each meter's order; ``peer_groups`` (e.g. the feeder of each
        reading) enables the peer correction, see :func:`correct_for_peers`; ``rows`` are the
        meters' store rows when the caller already looked them up."""
        n = len(meter_ids)
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        kwh = np.asarray(kwh, dtype=np.float64)
        interval_s = np.asarray(interval_s, dtype=np.int64)
        nan = np.full(n, np.nan)
        fc_exp = nan if expected is None else np.asarray(expected, dtype=np.float64)
        fc_lo = nan if lower is None else np.asarray(lower, dtype=np.float64)
        fc_hi = nan if upper is None else np.asarray(upper, dtype=np.float64)

        if rows is None:
            rows = self.store.rows_for(meter_ids)
        out = FeatureBatch(
            matrix=np.zeros((n, len(FEATURE_NAMES))), expected=fc_exp.copy(), baseline=np.zeros(n),
            spread=np.zeros(n), unchanged_intervals=np.zeros(n), zero_hours=np.zeros(n),
            slot_labels=np.zeros(n, dtype=np.int64), hourly_expected=np.zeros(n), usual_share=np.zeros(n),
            duplicate=np.zeros(n, dtype=bool), stale=np.zeros(n, dtype=bool), late=np.zeros(n, dtype=bool),
            cold=np.zeros(n, dtype=bool), history_hours=np.zeros(n), lower=fc_lo.copy(), upper=fc_hi.copy(),
            band_residual=np.full(n, np.nan),
            drift_ratio=np.ones(n), window_ratio=np.ones(n), round=np.zeros(n, dtype=np.int64),
        )
        # Rounds: the k-th reading of each meter in this batch goes to round k.
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        first = np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        occurrence = np.empty(n, dtype=np.int64)
        occurrence[order] = np.arange(n) - group_start
        out.round = occurrence
        for idx in round_indices(occurrence):
            self._round(idx, rows[idx], ts[idx], kwh[idx], interval_s[idx], fc_exp[idx], fc_lo[idx], fc_hi[idx], out)
        if peer_groups is not None and n:
            correct_for_peers(out, np.asarray(peer_groups), ts, kwh)
        column = out.matrix[:, F["forecast_residual"]]
        column[:] = forecast_deviation(column)
        return out

    def _round(self, idx: np.ndarray, rows: np.ndarray, ts: np.ndarray, kwh: np.ndarray, interval_s: np.ndarray,
               fc_exp: np.ndarray, fc_lo: np.ndarray, fc_hi: np.ndarray, out: FeatureBatch) -> None:
        st = self.store
        sc = st.scalars
        seen = st.seen[rows]
        duplicate = (seen == ts[:, None]).any(axis=1)
        has_history = sc[rows, st.S_N] > 0
        oldest_seen = np.where(seen == np.iinfo(np.int64).min, np.iinfo(np.int64).max, seen).min(axis=1)
        full_memory = (seen != np.iinfo(np.int64).min).all(axis=1)
        late = has_history & ~duplicate & (ts < st.last_ts[rows])
        stale = late & full_memory & (ts < oldest_seen)
        late &= ~stale
        out.duplicate[idx] = duplicate
        out.stale[idx] = stale
        out.late[idx] = late

        interval_h = interval_s / 3600.0
        how, hod, day_phase, week_phase = _slots(ts, interval_s)
        n_seen = sc[rows, st.S_N]
        mean = np.where(n_seen > 0, sc[rows, st.S_MEAN], kwh)
        gvar = sc[rows, st.S_VAR]
        eps = 0.1 * mean + 1e-9
        g_spread = np.sqrt(gvar + (0.05 * mean) ** 2) + 1e-9

        h = st.how[rows, how].astype(np.float64)
        d = st.hod[rows, hod].astype(np.float64)
        k = 2.0
        w_how = h[:, 2] / (h[:, 2] + k)
        # Hour of day on the same day type (weekday or weekend); until that day type has been
        # seen at this hour, the other day type's, then the meter's overall level.
        o = st.hod[rows, (hod + 24) % HOD_SLOTS].astype(np.float64)
        hod_mean = np.where(d[:, 2] > 0, d[:, 0], np.where(o[:, 2] > 0, o[:, 0], mean))
        hod_var = np.where(d[:, 2] > 1, d[:, 1], np.where(o[:, 2] > 1, o[:, 1], gvar))
        baseline = np.where(h[:, 2] > 0, w_how * h[:, 0] + (1 - w_how) * hod_mean, hod_mean)
        base_var = np.where(h[:, 2] > 1, w_how * h[:, 1] + (1 - w_how) * hod_var, hod_var)
        spread = np.sqrt(base_var + (0.1 * baseline) ** 2 + (0.02 * mean) ** 2) + 1e-9

        # The baseline features never use the forecast, so they mean the same with or without one;
        # what the forecast adds is its own feature.
        has_fc = np.isfinite(fc_exp)
        half_band = np.where(has_fc, np.maximum((fc_hi - fc_lo) / 2.0, 0.05 * np.abs(fc_exp) + eps), 1.0)
        band_residual = np.where(has_fc, (kwh - fc_exp) / half_band, np.nan)
        # In the baseline's spreads (the band of a young meter's forecast is too narrow to judge
        # by: 3 days of history give Prophet a confident band); shaped by
        # :func:`forecast_deviation` once peers have been accounted for.
        forecast_residual = np.where(has_fc, np.clip((kwh - fc_exp) / spread, -50, 50), np.nan)

        last_kwh = sc[rows, st.S_LAST_KWH]
        contiguous = has_history & ~late & (ts - st.last_ts[rows] <= 1.5 * interval_s * 1000)
        change_z = np.where(contiguous, (kwh - last_kwh) / g_spread, 0.0)
        unchanged = np.where(contiguous & (np.abs(kwh - last_kwh) <= 1e-9 + 1e-6 * np.abs(kwh)) & (kwh > 0),
                             sc[rows, st.S_UNCHANGED] + 1, 0.0)
        zero = np.where(kwh <= 1e-9, np.where(contiguous, sc[rows, st.S_ZERO] + 1, 1.0), 0.0)

        pos = sc[rows, st.S_RING_POS].astype(np.int64) % WINDOW
        win_now = st.window[rows].copy()
        win_exp_now = st.window_expected[rows].copy()
        filled = np.minimum(n_seen, WINDOW - 1).astype(np.int64)
        # Window = the previous WINDOW-1 readings plus this one; the ring's order does not matter
        # for a mean and a spread, only how many of its slots hold data.
        r = np.arange(len(rows))
        win_now[r, pos] = kwh
        win_exp_now[r, pos] = baseline
        valid = (np.arange(WINDOW)[None, :] < (filled + 1)[:, None])
        counts = valid.sum(axis=1)
        wsum = np.where(valid, win_now, 0.0).sum(axis=1)
        wexp = np.where(valid, win_exp_now, 0.0).sum(axis=1)
        wmean = wsum / counts
        wsq = np.where(valid, win_now**2, 0.0).sum(axis=1) / counts
        wstd = np.sqrt(np.maximum(wsq - wmean**2, 0.0))
        window_ratio = (wmean + eps) / (wexp / counts + eps)
        window_variability = np.where(counts >= 3, np.log((wstd + 0.01 * mean + 1e-9) / g_spread), 0.0)

        drift_obs = np.where(n_seen > 0, sc[rows, st.S_DRIFT_OBS], kwh)
        drift_exp = np.where(n_seen > 0, sc[rows, st.S_DRIFT_EXP], baseline)
        drift_alpha = np.minimum(interval_s / (3 * 86400.0), 1.0)
        drift_obs_new = drift_obs + drift_alpha * (kwh - drift_obs)
        drift_exp_new = drift_exp + drift_alpha * (baseline - drift_exp)
        drift_ratio = (drift_obs_new + eps) / (drift_exp_new + eps)

        usual_rate = baseline / interval_h
        zero_hours = zero * interval_h
        unchanged_hours = unchanged * interval_h
        hours_of_history = n_seen * interval_h
        cold = hours_of_history < WARMUP_DAYS * 24

        # An hour-of-week slot never seen yet is estimated from the hour of day alone, which
        # knows nothing of weekly patterns (a school on its first Saturday): usage *below* such
        # an estimate is discounted until the slot has been seen, usage above it is not.
        slot_confidence = 0.25 + 0.75 * h[:, 2] / (h[:, 2] + 1.0)

        def discount_dips(values: np.ndarray) -> np.ndarray:
            return np.where(values < 0, values * slot_confidence, values)

        m = out.matrix
        m[idx, F["usage_vs_baseline"]] = discount_dips(np.log((kwh + eps) / (baseline + eps)))
        m[idx, F["baseline_z"]] = discount_dips(np.clip((kwh - baseline) / spread, -50, 50))
        m[idx, F["change_z"]] = np.clip(change_z, -50, 50)
        m[idx, F["window_vs_baseline"]] = discount_dips(np.log(window_ratio))
        m[idx, F["window_variability"]] = window_variability
        m[idx, F["unchanged_hours"]] = np.log1p(unchanged_hours)
        m[idx, F["zero_hours"]] = np.log1p(zero_hours) * np.clip(baseline / (mean + 1e-9), 0.0, 1.0)
        m[idx, F["drift"]] = discount_dips(np.log(drift_ratio))
        m[idx, F["hour_sin"]] = np.sin(2 * np.pi * day_phase)
        m[idx, F["hour_cos"]] = np.cos(2 * np.pi * day_phase)
        m[idx, F["dow_sin"]] = np.sin(2 * np.pi * week_phase)
        m[idx, F["dow_cos"]] = np.cos(2 * np.pi * week_phase)
        m[idx, F["forecast_residual"]] = forecast_residual
        skip = duplicate | stale
        if skip.any():
            m[idx[skip]] = 0.0

        out.band_residual[idx] = band_residual
        out.baseline[idx] = baseline
        out.spread[idx] = spread
        out.unchanged_intervals[idx] = unchanged
        out.zero_hours[idx] = zero_hours
        out.slot_labels[idx] = how
        out.hourly_expected[idx] = usual_rate
        out.usual_share[idx] = baseline / (mean + 1e-9)
        out.cold[idx] = cold
        out.history_hours[idx] = hours_of_history
        out.drift_ratio[idx] = drift_ratio
        out.window_ratio[idx] = window_ratio

        # ---- advance state: only in-order, new readings -----------------------------------
        upd = ~(duplicate | stale | late)
        # Every scored reading (late ones too) is remembered, so it is never scored twice. The
        # memory keeps the newest SEEN timestamps: a replay of old readings after a crash (or
        # a burst of late ones) never pushes out the newest, which a re-delivery of the last
        # readings must still find.
        remember = ~(duplicate | stale)
        if remember.any():
            rr, tr = rows[remember], ts[remember]
            memory = st.seen[rr]
            oldest = memory.argmin(axis=1)
            newer = tr > memory[np.arange(len(rr)), oldest]
            st.seen[rr[newer], oldest[newer]] = tr[newer]
        if not upd.any():
            return
        u = rows[upd]
        # the meter's first reading has no overall statistics yet: nothing to cap it by
        first_cap = np.where(n_seen[upd] > 0, mean[upd] + 4 * g_spread[upd], np.inf)
        _ew_update(st.how, u, how[upd], kwh[upd], 0.15, spread[upd], first_cap)
        _ew_update(st.hod, u, hod[upd], kwh[upd], 0.1, spread[upd], first_cap)
        n_u = sc[u, st.S_N]
        alpha = np.maximum(1.0 / (n_u + 1.0), 0.01)
        gm = np.where(n_u > 0, sc[u, st.S_MEAN], kwh[upd])
        dlt = np.clip(kwh[upd], 0, gm + 6 * g_spread[upd]) - gm
        sc[u, st.S_MEAN] = gm + alpha * dlt
        sc[u, st.S_VAR] = np.where(n_u > 0, (1 - alpha) * (sc[u, st.S_VAR] + alpha * dlt * dlt), 0.0)
        sc[u, st.S_LAST_KWH] = kwh[upd]
        sc[u, st.S_INTERVAL] = interval_s[upd]
        sc[u, st.S_N] = n_u + 1
        sc[u, st.S_UNCHANGED] = unchanged[upd]
        sc[u, st.S_ZERO] = zero[upd]
        sc[u, st.S_DRIFT_OBS] = drift_obs_new[upd]
        sc[u, st.S_DRIFT_EXP] = drift_exp_new[upd]
        st.window[u, pos[upd]] = kwh[upd]
        st.window_expected[u, pos[upd]] = baseline[upd]
        sc[u, st.S_RING_POS] = (pos[upd] + 1) % WINDOW
        st.last_ts[u] = ts[upd]
