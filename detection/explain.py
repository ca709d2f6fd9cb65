"""Why a reading was flagged, in words a village grid operator can act on.

Contributions are computed only for flagged rows, by **robust deviation attribution**: each
feature's deviation from its training median in units of its training spread (IQR/1.349),
squared and normalised to sum to 1 over the row. Time-of-day and day-of-week features are
down-weighted: they locate a reading, they rarely are its cause. An Isolation Forest isolates a
point sooner along the features in which it lies far out, so this is a cheap stand-in for SHAP
values of the forest; ``bench/explain_agreement.py`` measures how often its top cause agrees
with SHAP's TreeExplainer on the same model.

The kind of anomaly (outage, stuck, spike, high_load, drift) is read from the state the features
came from, so it holds whatever the model's score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detection.features import FEATURE_INDEX, FEATURE_NAMES, FeatureBatch
from detection.meter_state import WINDOW

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIME_FEATURES = {"hour_sin", "hour_cos", "dow_sin", "dow_cos"}
TIME_WEIGHT = 0.25
DEFAULT_SCALE = np.array([
    0.3 if n in ("usage_vs_baseline", "window_vs_baseline") else
    0.1 if n == "drift" else
    0.3 if n in ("unchanged_hours", "zero_hours") else
    0.5 if n == "window_variability" else
    1.0 if n in TIME_FEATURES else 1.5
    for n in FEATURE_NAMES
])
"""Spreads used before a model exists (baseline rules): a typical reading's deviation."""


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


def _sentence(feature: str, i: int, fb: FeatureBatch, kwh: float, interval_s: int) -> str:
    usual = fb.baseline[i]
    when = slot_name(fb.slot_labels[i], interval_s)
    if feature in ("usage_vs_baseline", "baseline_z"):
        if kwh <= 1e-9:
            return f"no consumption where {usual:.2f} kWh is usual for {when}"
        ratio = kwh / max(usual, 1e-9)
        if ratio >= 100:
            return f"usage of {kwh:.2f} kWh where almost none is usual for {when} ({usual:.3f} kWh)"
        if ratio >= 1:
            return f"usage {ratio:.1f}x the usual for {when} ({kwh:.2f} kWh vs {usual:.2f} kWh)"
        return f"usage {ratio * 100:.0f}% of the usual for {when} ({kwh:.2f} kWh vs {usual:.2f} kWh)"
    if feature == "change_z":
        delta = fb.matrix[i, FEATURE_INDEX["change_z"]] * fb.spread[i]
        return f"usage changed by {delta:+.2f} kWh from the previous reading"
    if feature == "window_vs_baseline":
        return f"the last {WINDOW} readings average {fb.window_ratio[i]:.1f}x the usual"
    if feature == "window_variability":
        if fb.matrix[i, FEATURE_INDEX["window_variability"]] < 0:
            return "readings have stopped varying the way they usually do"
        return "readings swing far more than usual"
    if feature == "unchanged_hours":
        n = int(fb.unchanged_intervals[i]) + 1
        return f"reading unchanged for {n} intervals ({n * interval_s / 3600:.1f} h)"
    if feature == "zero_hours":
        return (f"no consumption for {fb.zero_hours[i]:.1f} h where "
                f"{fb.hourly_expected[i]:.2f} kWh/h is usual")
    if feature == "drift":
        ratio = fb.drift_ratio[i]
        direction = "crept up" if ratio >= 1 else "sunk"
        return f"usage has {direction} to {ratio:.2f}x the usual over the past days"
    if feature == "forecast_residual":
        return forecast_sentence(kwh, fb.expected[i], fb.lower[i], fb.upper[i])
    return f"unusual usage for {when}"


def anomaly_kind(i: int, fb: FeatureBatch, kwh: float) -> str:
    """The most likely kind: outage, stuck, drift, high_load, spike or dip."""
    ratio = kwh / max(fb.baseline[i], 1e-9)
    if kwh <= 1e-9 and fb.zero_hours[i] > 0:
        return "outage"
    if fb.unchanged_intervals[i] >= 2:
        return "stuck"
    if fb.window_ratio[i] >= 1.6 and ratio >= 1.4:
        return "high_load"
    if ratio >= 1.8:
        return "spike"
    if fb.drift_ratio[i] >= 1.25 or fb.drift_ratio[i] <= 0.75:
        return "drift"
    return "dip" if ratio < 1 else "spike"


def explain_rows(
    fb: FeatureBatch, rows: np.ndarray, kwh: np.ndarray, interval_s: np.ndarray,
    center: np.ndarray, scale: np.ndarray, top: int = 3,
) -> list[tuple[str, list[Cause]]]:
    """(kind, causes) for each of ``rows`` (indices into the batch)."""
    if len(rows) == 0:
        return []
    shares = contributions(fb.matrix[rows], center, scale)
    results = []
    for j, i in enumerate(rows):
        order = np.argsort(-shares[j])
        causes: list[Cause] = []
        used: set[str] = set()
        for f in order:
            name = FEATURE_NAMES[f]
            # usage ratio and z-score say the same thing in different units: one sentence
            group = "usage" if name in ("usage_vs_baseline", "baseline_z") else name
            group = "time" if name in TIME_FEATURES else group
            if group in used:
                continue
            if causes and shares[j, f] < 0.05:
                break
            used.add(group)
            causes.append(Cause(name, float(shares[j, f]), _sentence(name, int(i), fb, float(kwh[i]), int(interval_s[i]))))
            if len(causes) == top:
                break
        results.append((anomaly_kind(int(i), fb, float(kwh[i])), causes))
    return results
