"""Plain rules for what has a plain definition: outages, stuck registers, and young meters' spikes.

Every meter's outages and stuck registers are flagged by these rules (the forest ranks a short
outage with the ordinary dips it saw in training); a meter with less than a day of history has
no model score yet, and its spikes are judged here too.
"""

from __future__ import annotations

import numpy as np

from detection.features import FEATURE_INDEX, FeatureBatch
from detection.thresholds import Thresholds

SPIKE_RATIO = 4.0
SPIKE_SPREADS = 6.0
"""A cold meter's spike: this many times its baseline and this many spreads above it."""
SPIKE_HISTORY_HOURS = 24.0
"""History before a cold meter's baseline says enough to call anything a spike."""
USUAL_SHARE_FOR_OUTAGE = 0.25
"""A zero is an outage only where the slot's usual usage is at least this share of the meter's mean."""


def rule_scores(fb: FeatureBatch, mask: np.ndarray, interval_s: np.ndarray, thresholds: Thresholds, *,
                spikes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(score, pseudo tail probability) of the rows in ``mask``, so the shared thresholds and
    severities apply.

    Scores in [0, 1] reach 0.5 (flag) at a rule's threshold and 1 at twice it: a reading
    :data:`SPIKE_RATIO` times its baseline and :data:`SPIKE_SPREADS` spreads above it (once a
    day of history shows what is usual); a non-zero reading unchanged for ``stuck_hours`` and
    ``stuck_intervals``; zero consumption for ``outage_hours`` where usage is usual.
    """
    th = thresholds
    m = fb.matrix[mask]
    ratio = np.exp(m[:, FEATURE_INDEX["usage_vs_baseline"]])
    z = m[:, FEATURE_INDEX["baseline_z"]]
    known = fb.history_hours[mask] >= SPIKE_HISTORY_HOURS
    spike = np.where(spikes & known & (ratio >= SPIKE_RATIO) & (z >= SPIKE_SPREADS),
                     np.minimum(0.5 * z / SPIKE_SPREADS, 1.0), 0.0)
    unchanged_n = fb.unchanged_intervals[mask] + 1  # readings with the same value, this one included
    unchanged_h = unchanged_n * interval_s[mask] / 3600.0
    stuck_run = (unchanged_h >= th.stuck_hours) & (unchanged_n >= th.stuck_intervals)
    stuck = np.where(stuck_run, np.minimum(0.5 * unchanged_h / th.stuck_hours, 1.0), 0.0)
    zero_h = fb.zero_hours[mask] * (fb.usual_share[mask] >= USUAL_SHARE_FOR_OUTAGE)
    outage = np.where(zero_h >= th.outage_hours, np.minimum(0.5 * zero_h / th.outage_hours, 1.0), 0.0)
    score = np.maximum.reduce([spike, stuck, outage])
    tail = np.where(score >= 0.5, 1e-3 * (1.0 - score) + 1e-5, 1.0)
    return score, tail
