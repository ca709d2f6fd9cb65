"""Rules for what has a plain definition, judged by each meter's own habits.

* **Outage**: a run of zero readings that is improbable for this meter now (its recent zero
  regime, the share of zeros in this hour, what its register shows at this flow). Summer zeros
  of a heating-gas meter are not outages; an evening of zeros where a household never reads zero is.
* **Stuck register**: a run of one unchanged, non-zero reading that is improbable for this meter
  at this level: a gas register that counts whole cubic metres repeats "1" for hours at low
  load; a household's 0.437 kWh does not repeat three times.
* **Catch-up**: after a communication gap, a reading that carries about the energy of the whole
  gap: a data-quality event, never a consumption spike.
* **Level shift**: the meter's level changed for good (see :mod:`detection.features`); flagged
  once, when its baselines move to the new level.
* **Far off**: a reading :data:`FAR_SPREADS` spreads from its baseline, and as much again as the
  baseline, is an anomaly whatever a model says (a model trained on another fleet may have seen
  such readings often), once a day of history shows what is usual.
* **Sustained**: a reading :data:`SUSTAINED_SPREADS` spreads off whose recent window is nearly as far
  off the same way (:data:`SUSTAINED_WINDOW`) (every reading of the last hour or hours beyond it, a holiday's working hours, a heater
  left on), once a day of history shows what is usual and while the baseline is the meter's own.
  Four such readings in a row do not happen by chance, whatever a model trained elsewhere ranks.
* **Spikes without a model**: where no model scores a reading (no trained model yet), a reading
  far above its baseline, once a day of history shows what is usual, is judged here.

Each rule reports a strength: 1 at its threshold, growing with how far past it the reading is
(a two-hour outage is at 1, a six-hour one well past), which sets the severity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detection.features import FeatureBatch

OUTAGE_SURPRISE = 4.0
"""A zero run whose probability is below 1 in 10,000 (at sensitivity 1) is an outage."""
STUCK_SURPRISE = 4.0
"""The same for a run of one unchanged reading."""
STUCK_READINGS = 3
"""A stuck register shows at least three identical readings."""
SPIKE_RELATIVE = 3.0
SPIKE_SPREADS = 6.0
"""A spike without a model: three times its baseline (plus a share of the level) above it, and six spreads."""
SPIKE_HISTORY_HOURS = 24.0
"""History before a baseline says enough to call anything a spike."""
FAR_SPREADS = 10.0
FAR_RELATIVE = 1.0
"""Far off: ten spreads from the baseline and the baseline's size again (plus a share of the level)."""
FAR_MIN_OBSERVATIONS = 3
"""Observations of its slot a reading's spread needs before "ten spreads" means anything."""
SUSTAINED_SPREADS = 3.0
SUSTAINED_WINDOW = 2.5
"""A sustained departure: the reading three spreads off, its window (each reading clipped at three)
two and a half: the last readings all well beyond their spreads."""
SUSTAINED_MAX_BORROWED = 0.5
"""A baseline mostly borrowed from the other day type is too uncertain for the sustained rule."""
CATCH_UP_STRENGTH = 1.0
"""A catch-up is reported, never escalated: the energy is real, only its timing is not."""
LEVEL_SHIFT_STRENGTH = 2.0
"""A lasting change of level deserves a look: WARNING."""


@dataclass
class RuleFindings:
    """Which rows a rule flags, how strongly (1 at the threshold), and which rule."""

    hit: np.ndarray
    strength: np.ndarray
    rule: np.ndarray
    """"outage", "stuck", "catch_up", "level_shift", "spike" (far off, either way), "sustained" or ""."""


def apply_rules(fb: FeatureBatch, mask: np.ndarray, sensitivity: np.ndarray, *, spikes: bool) -> RuleFindings:
    """The rules over the rows in ``mask`` (results are row-aligned with the masked rows)."""
    log_sensitivity = np.log10(np.maximum(sensitivity[mask], 1e-3))
    zero = fb.feature("zero_surprise")[mask]
    repeat = fb.feature("repeat_surprise")[mask]
    outage = zero / np.maximum(OUTAGE_SURPRISE - log_sensitivity, 0.5)
    stuck = np.where(fb.repeat_run[mask] >= STUCK_READINGS,
                     repeat / np.maximum(STUCK_SURPRISE - log_sensitivity, 0.5), 0.0)
    excess = fb.feature("relative_deviation")[mask]
    deviation = fb.feature("deviation")[mask]
    known = fb.history_hours[mask] >= SPIKE_HISTORY_HOURS
    spike = np.where(known & spikes & (excess >= np.arcsinh(SPIKE_RELATIVE)), deviation / SPIKE_SPREADS, 0.0)
    settled = known & (fb.slot_observations[mask] >= FAR_MIN_OBSERVATIONS)
    far = np.where(settled & (np.abs(excess) >= np.arcsinh(FAR_RELATIVE)), np.abs(deviation) / FAR_SPREADS, 0.0)
    spike = np.maximum(spike, far)
    window = fb.feature("window_deviation")[mask]
    own_baseline = known & (fb.borrowed[mask] <= SUSTAINED_MAX_BORROWED)
    sustained = np.where(own_baseline & (np.sign(window) == np.sign(deviation)),
                         np.minimum(np.abs(deviation) / SUSTAINED_SPREADS, np.abs(window) / SUSTAINED_WINDOW), 0.0)
    catch_up = np.where(fb.catch_up[mask], CATCH_UP_STRENGTH, 0.0)
    level_shift = np.where(fb.level_shift[mask], LEVEL_SHIFT_STRENGTH, 0.0)
    strengths = np.vstack([outage, stuck, catch_up, level_shift, spike, sustained])
    names = np.array(["outage", "stuck", "catch_up", "level_shift", "spike", "sustained"], dtype=object)
    best = strengths.argmax(axis=0)
    strength = strengths[best, np.arange(strengths.shape[1])]
    hit = strength >= 1.0
    # A catch-up is what it is, however unusual its size: it is never reported as anything else.
    best = np.where(fb.catch_up[mask], 2, best)
    strength = np.where(fb.catch_up[mask], CATCH_UP_STRENGTH, strength)
    return RuleFindings(hit=hit, strength=strength, rule=np.where(hit, names[best], "").astype(object))
