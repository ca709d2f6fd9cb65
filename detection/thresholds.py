"""From scores to flags and severities: tail probabilities, sensitivity, and each meter's own history.

A reading is flagged when (1) its tail probability under the model (the share of training
readings that scored at least as abnormal) is below the INFO threshold times the meter's
sensitivity, and (2) once the meter has a score history, its score is also at least
``meter_z`` of its own spreads above its usual score, so a meter that is always a little
unusual does not alarm all day. Severity comes from the same tail probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detection.features import FeatureBatch, round_indices
from detection.meter_state import MeterStateStore, Scalar

SEVERITIES = ("INFO", "WARNING", "CRITICAL")
SCORE_HISTORY_HOURS = 48.0
"""Hours of history before a meter's own score spread is trusted, besides ``meter_history`` readings."""
SCORE_ALPHA = 0.02
"""Weight of a new score in a meter's usual score (about the last 50 readings)."""
FIRST_SCORE_VAR = 0.0025
"""Variance a meter's score statistics start from: a typical spread of forest scores (0.05)."""


@dataclass(frozen=True)
class Thresholds:
    """Tail probabilities per severity at sensitivity 1, for hourly readings, and the rules' durations.

    Operators count false alarms per meter and day, not per reading: a 15-minute meter sends
    four readings an hour, so its per-reading thresholds are a quarter of these (scaled by the
    interval up to one hour; hourly, daily and longer intervals use them as they are).
    """

    info: float = 0.012
    warning: float = 0.0005
    critical: float = 0.0001
    meter_z: float = 2.0
    """How far above its own usual score a warmed-up meter's reading must be."""
    meter_history: int = 48
    """Model-scored readings a meter needs before its own score spread is trusted."""
    outage_hours: float = 2.0
    """Zero consumption this long, where usage is usual, is an outage whatever the model says."""
    stuck_hours: float = 3.0
    stuck_intervals: int = 3
    """A non-zero reading repeated this long (and this many times) is a stuck meter."""

    def as_dict(self) -> dict[str, float]:
        return {"INFO": self.info, "WARNING": self.warning, "CRITICAL": self.critical}


def per_reading_scale(sensitivity: np.ndarray, interval_s: np.ndarray) -> np.ndarray:
    """What the tail thresholds are multiplied by: sensitivity, and the interval up to one hour."""
    return sensitivity * np.minimum(interval_s / 3600.0, 1.0)


def gate_by_meter_history(store: MeterStateStore, fb: FeatureBatch, rows: np.ndarray, use_model: np.ndarray,
                          score: np.ndarray, flag: np.ndarray, sensitivity: np.ndarray, interval_s: np.ndarray,
                          thresholds: Thresholds) -> None:
    """Per-meter thresholds: a model-flagged reading must also stand out for its own meter.

    Each meter keeps an exponentially weighted mean and variance of its unflagged scores;
    once it has ``meter_history`` model-scored readings, a reading stays flagged only if its
    score is ``meter_z`` of its own spreads above its usual score. Readings are taken in the
    feature extractor's rounds (the k-th reading of every meter in round k), so a meter's
    statistics advance reading by reading and the result does not depend on how readings
    were cut into micro-batches: the stream and ``wattsup detect`` agree exactly.
    """
    sc = store.scalars
    needed_hours = SCORE_HISTORY_HOURS + thresholds.meter_history * interval_s / 3600.0
    for in_round in round_indices(fb.round):
        idx = in_round[use_model[in_round]]
        if len(idx) == 0:
            continue
        r = rows[idx]
        usual, var = sc[r, Scalar.SCORE_MEAN], sc[r, Scalar.SCORE_VAR]
        ready = fb.history_hours[idx] >= needed_hours[idx]
        meter_z = (score[idx] - usual) / np.sqrt(var + 1e-4)
        flag[idx] &= ~ready | (meter_z >= thresholds.meter_z / np.sqrt(sensitivity[idx]))
        # Advance the statistics with the unflagged, in-order readings.
        learn = ~flag[idx] & ~fb.late[idx]
        if not learn.any():
            continue
        r, s, mean0, var0 = r[learn], score[idx][learn], usual[learn], var[learn]
        fresh = (var0 == 0) & (mean0 == 0)
        mean = np.where(fresh, s, mean0)
        delta = s - mean
        sc[r, Scalar.SCORE_MEAN] = mean + SCORE_ALPHA * delta
        sc[r, Scalar.SCORE_VAR] = np.where(fresh, FIRST_SCORE_VAR,
                                           (1 - SCORE_ALPHA) * (var0 + SCORE_ALPHA * delta * delta))


def severities(flag: np.ndarray, tail: np.ndarray, scale: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """INFO, WARNING or CRITICAL for flagged readings by their tail probability; "" otherwise."""
    severity = np.full(len(flag), "", dtype=object)
    severity[flag] = "INFO"
    severity[flag & (tail <= thresholds.warning * scale)] = "WARNING"
    severity[flag & (tail <= thresholds.critical * scale)] = "CRITICAL"
    return severity
