"""Detection over a whole frame: ``wattsup detect``, the dashboard's upload, evaluation.

Readings are replayed in time order through :class:`~detection.engine.DetectionEngine` in
micro-batches (:mod:`detection.replay`), so a CSV is judged exactly as the stream would judge
it. With no trained model a detector is first fitted on the data itself (unsupervised: no labels
are used), which is what makes it work on any meter's scale and interval without hand tuning:
features are relative to each meter's own baseline, and the model learns what is typical of
this data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from detection.calendar import UTC_CALENDAR, FleetCalendar
from detection.engine import DetectionEngine
from detection.replay import ForecastColumns, TimeOrderedReadings
from detection.thresholds import Thresholds
from detection.training import TrainedModel, fit_detector

ANOMALY_COLUMNS = ["timestamp", "meter_id", "feeder_id", "observed", "baseline", "expected", "lower", "upper",
                   "residual", "band_residual", "score", "severity", "kind", "causes", "model_version", "causes_json"]


@dataclass
class DetectionResult:
    scores: pd.DataFrame
    """One row per input reading, input order: timestamp, meter_id, score, flag, severity, baseline
    (the meter's usual usage for the slot), model_version."""
    anomalies: pd.DataFrame
    """One row per anomaly with its causes (``causes`` as text, ``causes_json`` as records); the
    forecast columns (expected, lower, upper, residual, band_residual) are empty without forecasts."""
    model_version: str


def score_frame(engine: DetectionEngine, frame: pd.DataFrame,
                forecasts: ForecastColumns | None = None) -> DetectionResult:
    """Score ``frame`` (timestamp, meter_id, kwh[, feeder_id, interval_seconds]) in time order,
    joined with ``forecasts`` (row-aligned, e.g. a forecaster hindcast) if given."""
    readings = TimeOrderedReadings(frame, forecasts)
    n = len(readings)
    score = np.zeros(n)
    flag = np.zeros(n, dtype=bool)
    severity = np.full(n, "", dtype=object)
    version = np.full(n, "", dtype=object)
    baseline = np.zeros(n)
    anomalies: list[dict] = []
    for part, batch in readings.batches():
        res = engine.score(batch)
        score[part], flag[part], severity[part] = res.score, res.flag, res.severity
        version[part], baseline[part] = res.model_version, res.features.baseline
        anomalies += res.anomalies
    scores = pd.DataFrame({
        "timestamp": readings.frame["timestamp"], "meter_id": readings.frame["meter_id"],
        "score": np.round(readings.in_frame_order(score), 5), "flag": readings.in_frame_order(flag).astype(int),
        "severity": readings.in_frame_order(severity), "baseline": np.round(readings.in_frame_order(baseline), 4),
        "model_version": readings.in_frame_order(version),
    })
    return DetectionResult(scores=scores, anomalies=anomalies_frame(anomalies), model_version=engine.model_version)


def anomalies_frame(anomalies: list[dict]) -> pd.DataFrame:
    """Anomaly records as a frame of :data:`ANOMALY_COLUMNS`, causes as text and as JSON."""
    if not anomalies:
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    df = pd.DataFrame(anomalies)
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="ms", utc=True)
    df["causes_json"] = df["causes"].map(json.dumps)
    df["causes"] = df["causes"].map(lambda cs: "; ".join(c["text"] for c in cs))
    return df[ANOMALY_COLUMNS]


def detect_frame(frame: pd.DataFrame, model: TrainedModel | None = None, *, sensitivity: float = 1.0,
                 thresholds: Thresholds | None = None, forecasts: ForecastColumns | None = None,
                 calendar: FleetCalendar = UTC_CALENDAR) -> DetectionResult:
    """Detect anomalies in a readings frame, joined with ``forecasts`` if given (row-aligned), with
    slots and day types on the fleet's ``calendar``; fits a model on it (and the forecasts) when
    none is given."""
    if model is None:
        model = fit_detector(frame, source="the input itself (unsupervised)", forecasts=forecasts, calendar=calendar)
    engine = DetectionEngine(model, sensitivity=lambda _m: sensitivity, thresholds=thresholds, calendar=calendar)
    return score_frame(engine, frame, forecasts=forecasts)
