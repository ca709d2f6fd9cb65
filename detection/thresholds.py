"""From model scores to flags and severities, calibrated per meter.

A model score is only comparable within a meter: a building's scores are not a household's, and
a model trained on one fleet scores another fleet's meters higher or lower across the board. So
a reading is flagged when

1. its score stands out from its own meter's usual scores (``meter_z`` of the meter's spreads
   above their mean, at sensitivity 1 and for hourly readings). A meter starts from the trained
   model's population (its median score and spread) and moves to its own statistics as it is
   scored, so its first days are judged with what is known, and a model trained on another
   fleet neither floods nor goes silent; and
2. it is material: it lies several spreads from its baseline, or its window or slow average has
   moved, or a run of zeros or of one value is improbable for it. A high score on an ordinary
   reading (the forest finds Tuesday 03:00 rare) is no alarm.

Severity grows with the deviation: INFO at the threshold, WARNING and CRITICAL at
:data:`WARNING_SPREADS` and :data:`CRITICAL_SPREADS` spreads, for a rule at :data:`RULE_WARNING`
and :data:`RULE_CRITICAL` times its threshold, or when the model's own tail probability says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from detection.features import FeatureBatch, round_indices
from detection.meter_state import MeterStateStore, Scalar

SEVERITIES = ("INFO", "WARNING", "CRITICAL")
PRIOR_READINGS = 48.0
"""Readings' worth of weight the population's score statistics keep in a meter's: two days hourly."""
SCORE_ALPHA = 0.02
"""Weight of a new score in a meter's usual score (about the last 50 readings)."""
LEARN_CAP = 3.0
"""A score enters its meter's statistics capped at this many of the meter's spreads above its usual."""
DEVIATION_MATERIAL = 3.0
"""Spreads from the baseline that make a single reading material."""
WINDOW_MATERIAL = 2.0
"""Mean deviation of the recent window (spreads) that makes it material."""
DRIFT_MATERIAL = 1.0
"""Slow (days) average deviation (spreads) that makes a drift material."""
LASTING_OWN_SPREADS = 1.0
"""A reading is part of a lasting deviation when it is itself at least one spread off, the same way."""
SURPRISE_MATERIAL = 3.0
"""An unchanged or zero run with a probability below one in a thousand is material."""
WARNING_SPREADS = 10.0
CRITICAL_SPREADS = 25.0
"""Deviations (spreads) from which a flag is a WARNING or CRITICAL whatever its tail probability."""
RULE_WARNING = 2.0
RULE_CRITICAL = 4.0
"""Rule strengths (1 at a rule's threshold) from which its flag is a WARNING or CRITICAL: twice as
improbable a run (in orders of magnitude) is a WARNING, four times CRITICAL."""


@dataclass(frozen=True)
class Thresholds:
    """Per-reading probabilities per severity at sensitivity 1 for hourly readings, and how far above
    its own usual score a meter's reading must be.

    Operators count false alarms per meter and day, not per reading: a 15-minute meter sends
    four readings an hour, so its per-reading probabilities are a quarter of these (scaled by
    the interval up to one hour; hourly, daily and longer intervals use them as they are).
    """

    info: float = 0.012
    warning: float = 0.0005
    critical: float = 0.0001

    def as_dict(self) -> dict[str, float]:
        return {"INFO": self.info, "WARNING": self.warning, "CRITICAL": self.critical}


@dataclass(frozen=True)
class ScorePrior:
    """A population's usual anomaly score and its spread (the trained model's)."""

    center: float = 0.4
    spread: float = 0.05


def per_reading_scale(sensitivity: np.ndarray, interval_s: np.ndarray) -> np.ndarray:
    """What the tail probabilities are multiplied by: sensitivity, and the interval up to one hour."""
    return sensitivity * np.minimum(interval_s / 3600.0, 1.0)


def meter_z_threshold(scale: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Spreads above its usual score a reading needs: the normal quantile of the INFO probability."""
    return ndtri(1.0 - np.clip(thresholds.info * scale, 1e-9, 0.5))


def materiality(fb: FeatureBatch) -> np.ndarray:
    """How material each reading is (1 at the smallest material deviation, see the module docstring).

    A lasting deviation (the window, the slow average) makes a reading material only where the
    reading itself is part of it, off its baseline the same way by at least
    :data:`LASTING_OWN_SPREADS`: the normal reading after a spike or a charging car is not an
    event because its window still remembers one.
    """
    deviation = fb.feature("deviation")

    def lasting(name: str, material: float | np.ndarray, own: float) -> np.ndarray:
        value = fb.feature(name)
        part_of = (np.sign(value) == np.sign(deviation)) & (np.abs(deviation) >= own)
        return np.where(part_of, np.abs(value) / material, 0.0)

    # A window's readings are judged against one baseline: while it is borrowed from the other day
    # type (a meter's first Monday judged by its weekend), their errors are one error, and four
    # readings two spreads off are not four pieces of evidence. The window then needs what a single
    # reading needs, falling to WINDOW_MATERIAL as the meter learns this day type.
    window_material = WINDOW_MATERIAL + (DEVIATION_MATERIAL - WINDOW_MATERIAL) * fb.borrowed

    return np.maximum.reduce([
        np.abs(deviation) / DEVIATION_MATERIAL,
        lasting("window_deviation", window_material, LASTING_OWN_SPREADS),
        lasting("drift", DRIFT_MATERIAL, LASTING_OWN_SPREADS),
        fb.feature("repeat_surprise") / SURPRISE_MATERIAL,
        fb.feature("zero_surprise") / SURPRISE_MATERIAL,
    ])


def materiality_needed(sensitivity: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Materiality a reading needs at ``sensitivity``: 1 at sensitivity 1, and as the normal quantile
    of the INFO probability moves with it (sensitivity 2 asks for 0.88 of each material size, 0.5
    for 1.12), so sensitivity changes how big an event must be as well as how rare its score."""
    z = meter_z_threshold(np.asarray(sensitivity, dtype=np.float64), thresholds)
    return z / meter_z_threshold(np.ones(1), thresholds)


def flag_by_meter(store: MeterStateStore, fb: FeatureBatch, rows: np.ndarray, use_model: np.ndarray,
                  score: np.ndarray, scale: np.ndarray, thresholds: Thresholds, prior: ScorePrior,
                  sensitivity: np.ndarray | None = None) -> np.ndarray:
    """Model flags, each meter's statistics advancing reading by reading (the feature extractor's
    rounds), so the answer does not depend on how readings were cut into micro-batches."""
    sc = store.scalars
    flag = np.zeros(len(score), dtype=bool)
    needed = 1.0 if sensitivity is None else materiality_needed(sensitivity, thresholds)
    material = materiality(fb) >= needed
    z_needed = meter_z_threshold(scale, thresholds)
    for in_round in round_indices(fb.round):
        idx = in_round[use_model[in_round]]
        if len(idx) == 0:
            continue
        r = rows[idx]
        n = sc[r, Scalar.SCORE_COUNT]
        weight = n / (n + PRIOR_READINGS)
        center = weight * sc[r, Scalar.SCORE_MEAN] + (1 - weight) * prior.center
        var = weight * sc[r, Scalar.SCORE_VAR] + (1 - weight) * prior.spread ** 2
        z = (score[idx] - center) / np.sqrt(var + 1e-6)
        flag[idx] = material[idx] & (z >= z_needed[idx])
        # Advance the statistics with every in-order reading, its score capped at LEARN_CAP spreads:
        # what a meter does often (a car charged at night) becomes its usual, one anomaly barely moves it.
        learn = ~fb.late[idx]
        if not learn.any():
            continue
        capped = np.minimum(score[idx], center + LEARN_CAP * np.sqrt(var + 1e-6))
        r, s, n = r[learn], capped[learn], n[learn]
        mean0, var0 = sc[r, Scalar.SCORE_MEAN], sc[r, Scalar.SCORE_VAR]
        alpha = np.maximum(1.0 / (n + 1.0), SCORE_ALPHA)
        delta = s - mean0
        sc[r, Scalar.SCORE_MEAN] = mean0 + alpha * delta
        sc[r, Scalar.SCORE_VAR] = np.where(n > 0, (1 - alpha) * (var0 + alpha * delta * delta), 0.0)
        sc[r, Scalar.SCORE_COUNT] = n + 1
    return flag


def severities(flag: np.ndarray, tail: np.ndarray, deviation: np.ndarray, rule_strength: np.ndarray,
               scale: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """INFO, WARNING or CRITICAL for flagged readings; "" otherwise. The highest of what the model's
    tail probability, the deviation in spreads and a rule's strength say."""
    by_tail = np.where(tail <= thresholds.critical * scale, 2, np.where(tail <= thresholds.warning * scale, 1, 0))
    size = np.abs(deviation)
    by_size = np.where(size >= CRITICAL_SPREADS, 2, np.where(size >= WARNING_SPREADS, 1, 0))
    by_rule = np.where(rule_strength >= RULE_CRITICAL, 2, np.where(rule_strength >= RULE_WARNING, 1, 0))
    level = np.maximum.reduce([by_tail, by_size, by_rule])
    return np.where(flag, np.array(SEVERITIES, dtype=object)[level], "").astype(object)
