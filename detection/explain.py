"""Why a reading was flagged, in words a village grid operator can act on.

Contributions are computed only for flagged rows, by **robust deviation attribution**: each
feature's deviation from its training median in units of its training spread (IQR/1.349),
squared and normalised to sum to 1 over the row. Time-of-day and day-of-week features are
down-weighted: they locate a reading, they rarely are its cause. An Isolation Forest isolates a
point sooner along the features in which it lies far out, so this is a cheap stand-in for SHAP
values of the forest; ``bench/explain_agreement.py`` measures how often its top cause agrees
with SHAP's TreeExplainer on the same model. A rule's finding (a catch-up, a level shift) comes
first, in its own words.

The kind of anomaly (outage, stuck, catch_up, level_shift, spike, high_load, dip, drift) is read
from the rule that fired and the state the features came from, so it holds whatever the model's
score.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from detection.features import FEATURE_INDEX, FEATURE_NAMES, FeatureBatch
from detection.meter_state import WINDOW

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIME_FEATURES = {"hour_sin", "hour_cos", "dow_sin", "dow_cos"}
TIME_WEIGHT = 0.25
DEFAULT_SCALE = np.array([
    0.3 if n == "relative_deviation" else
    0.5 if n == "drift" else
    0.5 if n in ("repeat_surprise", "zero_surprise", "window_variability") else
    1.0 if n in TIME_FEATURES else 1.5
    for n in FEATURE_NAMES
])
"""Spreads used before a model exists (baseline rules): a typical reading's deviation."""
HIGH_LOAD_WINDOW = 1.5
"""A high reading whose window stands this many spreads high on average is a high load, not a spike."""
USUAL_SHARE_FOR_RATIO = 0.05
"""A baseline below this share of the meter's level is said as a difference, not a ratio (x40 of
almost nothing tells nothing)."""


@dataclass(frozen=True)
class Cause:
    feature: str
    contribution: float
    text: str

    def as_record(self) -> dict:
        return {"feature": self.feature, "contribution": round(self.contribution, 4), "text": self.text}


def slot_name(slot: int, interval_s: int) -> str:
    """``Tuesday 19:00`` for an hour-of-week slot (``Tuesday`` for daily data)."""
    if interval_s >= 86_400:
        return DAYS[int(slot) % 7]
    return f"{DAYS[int(slot) // 24 % 7]} {int(slot) % 24:02d}:00"


def contributions(matrix: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per-row feature shares of the deviation (rows sum to 1); a missing value (NaN: no
    forecast) deviates by nothing."""
    dev = np.nan_to_num(((matrix - center) / scale) ** 2, nan=0.0)
    weights = np.array([TIME_WEIGHT if n in TIME_FEATURES else 1.0 for n in FEATURE_NAMES])
    dev = dev * weights
    total = dev.sum(axis=1, keepdims=True)
    return np.divide(dev, total, out=np.full_like(dev, 1.0 / dev.shape[1]), where=total > 0)


def forecast_sentence(kwh: float, expected: float, lower: float, upper: float) -> str:
    """How a reading compares with its forecast, in the terms an operator reads a band chart."""
    head = f"observed {kwh:.2f} kWh where the forecast expected {expected:.2f} kWh"
    if not (np.isfinite(lower) and np.isfinite(upper)):
        return head
    if kwh > upper:
        return f"{head}: {kwh / max(upper, 1e-9):.1f}x the band's upper edge ({upper:.2f} kWh)"
    if kwh < lower:
        return f"{head}: {kwh / max(lower, 1e-9) * 100:.0f}% of the band's lower edge ({lower:.2f} kWh)"
    return f"{head}, inside its band ({lower:.2f} to {upper:.2f} kWh)"


ODDS_SAID_UP_TO = 1e12
"""Odds beyond a trillion are said as "less than once in a trillion": a person reads nothing more in
"3.1e+16 billion", and the model's tail is not that precise anyway."""


def _odds(odds: float) -> str:
    """How often, as a person says it: "about once in" two significant figures, in thousands, millions or
    billions; "less than once in a trillion" beyond :data:`ODDS_SAID_UP_TO`."""
    if odds >= ODDS_SAID_UP_TO:
        return "less than once in a trillion"
    for size, word in ((1e9, " billion"), (1e6, " million"), (1e3, " thousand"), (1.0, "")):
        if odds >= size:
            return f"about once in {float(f'{odds / size:.2g}'):g}{word}"
    return f"about once in {float(f'{odds:.2g}'):g}"


def _hours(intervals: float, interval_s: int) -> str:
    return f"{intervals * interval_s / 3600:.1f} h"


def _when(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return f"{DAYS[moment.weekday()]} {moment:%d %b %H:%M}"


def _usage_sentence(i: int, fb: FeatureBatch, kwh: float, when: str) -> str:
    usual = fb.baseline[i]
    if abs(kwh) <= 1e-9:
        return f"no consumption where {usual:.2f} kWh is usual for {when}"
    if usual > USUAL_SHARE_FOR_RATIO * fb.level[i] and kwh > 0:
        ratio = kwh / usual
        if ratio >= 1:
            return f"usage {ratio:.1f}x the usual for {when} ({kwh:.2f} kWh vs {usual:.2f} kWh)"
        return f"usage {ratio * 100:.0f}% of the usual for {when} ({kwh:.2f} kWh vs {usual:.2f} kWh)"
    spreads = (kwh - usual) / fb.spread[i]
    return f"usage of {kwh:.2f} kWh where {usual:.2f} kWh is usual for {when} ({spreads:+.0f} times its usual spread)"


def _sentence(feature: str, i: int, fb: FeatureBatch, kwh: float, interval_s: int) -> str:
    when = slot_name(fb.slot_labels[i], interval_s)
    if feature in ("deviation", "relative_deviation"):
        return _usage_sentence(i, fb, kwh, when)
    if feature == "change":
        delta = fb.feature("change")[i]
        return f"usage changed by {delta:+.1f} times the meter's usual spread from the previous reading"
    if feature == "window_deviation":
        z = fb.feature("window_deviation")[i]
        return f"the last {WINDOW} readings stand {abs(z):.1f} spreads {'above' if z >= 0 else 'below'} the usual on average"
    if feature == "window_variability":
        if fb.matrix[i, FEATURE_INDEX["window_variability"]] < 0:
            return "readings have stopped varying the way they usually do"
        return "readings swing far more than usual"
    if feature == "repeat_surprise":
        n = int(fb.repeat_run[i])
        odds = 10 ** fb.feature("repeat_surprise")[i]
        return (f"reading {kwh:g} unchanged for {n} intervals ({_hours(n, interval_s)}): a run that long "
                f"happens {_odds(odds)} for this meter at this level")
    if feature == "zero_surprise":
        hours = _hours(fb.zero_run[i], interval_s)
        share = fb.zero_probability[i]
        return (f"no consumption for {hours} where {fb.baseline[i] / (interval_s / 3600):.2f} kWh/h is usual: "
                f"zero usage, unusual for this meter in this season (zero {share:.1%} of the time now)")
    if feature == "drift":
        ratio = fb.drift_ratio[i]
        direction = "crept up" if ratio >= 1 else "sunk"
        return f"usage has {direction} to {ratio:.2f}x the usual over the past days"
    if feature == "forecast_residual":
        return forecast_sentence(kwh, fb.expected[i], fb.lower[i], fb.upper[i])
    return f"unusual usage for {when}"


def rule_cause(rule: str, i: int, fb: FeatureBatch, kwh: float, interval_s: int) -> Cause | None:
    """The sentence of a rule that speaks for itself (a catch-up, a level shift)."""
    if rule == "catch_up":
        hours = _hours(fb.gap_intervals[i], interval_s)
        return Cause("catch_up", 1.0, f"catch-up after {hours} without readings: {kwh:.2f} kWh delivered at once "
                                      f"(about {fb.gap_intervals[i] + 1:.0f} intervals' usage)")
    if rule == "level_shift":
        change = (fb.shift_factor[i] - 1.0) * 100
        direction = "up" if change >= 0 else "down"
        return Cause("level_shift", 1.0, f"usage has stepped {direction} {abs(change):.0f}% since "
                                         f"{_when(int(fb.shift_since[i]))} and stayed there: the baseline now "
                                         "follows the new level")
    return None


def anomaly_kind(i: int, fb: FeatureBatch, kwh: float, rule: str) -> str:
    """The most likely kind: catch_up, level_shift, outage, stuck, high_load, spike, dip or drift."""
    if rule in ("catch_up", "level_shift", "outage", "stuck"):
        return rule
    if abs(kwh) <= 1e-9 and fb.zero_run[i] > 0:
        return "outage"
    if fb.repeat_run[i] >= 3 and fb.feature("repeat_surprise")[i] >= 3.0:
        return "stuck"
    deviation = fb.feature("deviation")[i]
    if deviation >= 3.0:
        return "high_load" if fb.feature("window_deviation")[i] >= HIGH_LOAD_WINDOW else "spike"
    if deviation <= -3.0:
        return "dip"
    if abs(fb.feature("drift")[i]) >= 1.0:
        return "drift"
    return "dip" if deviation < 0 else "spike"


def explain_rows(
    fb: FeatureBatch, rows: np.ndarray, kwh: np.ndarray, interval_s: np.ndarray,
    center: np.ndarray, scale: np.ndarray, rules: np.ndarray | None = None, top: int = 3,
) -> list[tuple[str, list[Cause]]]:
    """(kind, causes) for each of ``rows`` (indices into the batch); ``rules`` is the rule that
    flagged each of them, if any."""
    if len(rows) == 0:
        return []
    rules = np.full(len(rows), "", dtype=object) if rules is None else rules
    shares = contributions(fb.matrix[rows], center, scale)
    results = []
    for j, i in enumerate(rows):
        first = rule_cause(rules[j], int(i), fb, float(kwh[i]), int(interval_s[i]))
        causes: list[Cause] = [first] if first else []
        used: set[str] = set()
        for f in np.argsort(-shares[j]):
            name = FEATURE_NAMES[f]
            # deviation in spreads and relative deviation say the same thing: one sentence
            group = "usage" if name in ("deviation", "relative_deviation") else name
            group = "time" if name in TIME_FEATURES else group
            if group in used:
                continue
            if causes and shares[j, f] < 0.05:
                break
            used.add(group)
            causes.append(Cause(name, float(shares[j, f]), _sentence(name, int(i), fb, float(kwh[i]),
                                                                      int(interval_s[i]))))
            if len(causes) == top:
                break
        results.append((anomaly_kind(int(i), fb, float(kwh[i]), rules[j]), causes))
    return results
