"""The offline engine behind ``wattsup detect``, the dashboard upload and evaluation.

It replays readings in timestamp order through :class:`DetectionEngine` in chunks, exactly
as micro-batches reach the stream worker, so a CSV is judged as the stream would judge it.
With no trained model it fits one on the data itself first (unsupervised: no labels are used),
which is what makes it work on any meter's scale and interval without hand tuning: features are
relative to each meter's own baseline, and the model learns what is typical of this data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecaster.hindcast import HindcastColumns, forecast_columns
from models.artifacts import LoadedModel
from models.training import fit_detector, peer_groups
from stream_processors.engine import DetectionEngine, Thresholds
from stream_processors.meter_state import time_aligned_chunks

CHUNK = 20_000


@dataclass
class DetectionResult:
    scores: pd.DataFrame
    """One row per input reading, input order: timestamp, meter_id, score, flag, severity, baseline
    (the meter's usual usage for the slot), model_version."""
    anomalies: pd.DataFrame
    """One row per anomaly with its causes (``causes`` as text, ``causes_json`` as records); the
    forecast columns (expected, lower, upper, residual, band_residual) are empty: a file has no forecast."""
    model_version: str


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    if "feeder_id" not in frame:
        frame = frame.assign(feeder_id=frame["meter_id"])
    if "interval_seconds" not in frame:
        from producers.csv_source import infer_interval_seconds

        frame = frame.assign(interval_seconds=infer_interval_seconds(frame["timestamp"], frame["meter_id"]))
    return frame


def run_engine(engine: DetectionEngine, frame: pd.DataFrame, chunk: int = CHUNK,
               forecasts: HindcastColumns | None = None) -> DetectionResult:
    """Score ``frame`` (timestamp, meter_id, kwh[, feeder_id, interval_seconds]) in time order,
    joined with ``forecasts`` (row-aligned, e.g. :func:`models.training.replay_forecasts`) if given."""
    frame = _ordered(frame)
    epoch_ms = frame["timestamp"].dt.as_unit("ms").astype("int64").to_numpy()
    order = np.argsort(epoch_ms, kind="stable")  # int64: sorting tz-aware timestamps makes Python objects
    ts = epoch_ms[order]
    meters = frame["meter_id"].astype(str).to_numpy()[order]
    feeders = frame["feeder_id"].astype(str).to_numpy()[order]
    groups = peer_groups(frame)[order]
    kwh = frame["kwh"].to_numpy(dtype=float)[order]
    interval = frame["interval_seconds"].to_numpy(dtype=np.int64)[order]
    n = len(frame)
    score = np.zeros(n)
    flag = np.zeros(n, dtype=bool)
    severity = np.full(n, "", dtype=object)
    version = np.full(n, "", dtype=object)
    baseline = np.zeros(n)
    anomalies: list[dict] = []
    for s, e in time_aligned_chunks(ts, chunk):
        res = engine.score(meters[s:e].tolist(), feeders[s:e].tolist(), ts[s:e], kwh[s:e], interval[s:e],
                           *forecast_columns(forecasts, order[s:e]), peer_groups=groups[s:e])
        score[s:e], flag[s:e], severity[s:e] = res.score, res.flag, res.severity
        version[s:e], baseline[s:e] = res.model_version, res.features.baseline
        anomalies += res.anomalies
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    scores = pd.DataFrame({
        "timestamp": frame["timestamp"], "meter_id": frame["meter_id"], "score": np.round(score[inverse], 5),
        "flag": flag[inverse].astype(int), "severity": severity[inverse], "baseline": np.round(baseline[inverse], 4),
        "model_version": version[inverse],
    })
    return DetectionResult(scores=scores, anomalies=anomalies_frame(anomalies), model_version=engine.model_version)


def anomalies_frame(anomalies: list[dict]) -> pd.DataFrame:
    import json

    columns = ["timestamp", "meter_id", "feeder_id", "observed", "baseline", "expected", "lower", "upper", "residual",
               "band_residual", "score", "severity", "kind", "causes", "model_version", "causes_json"]
    if not anomalies:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(anomalies)
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="ms", utc=True)
    df["causes_json"] = df["causes"].map(json.dumps)
    df["causes"] = df["causes"].map(lambda cs: "; ".join(c["text"] for c in cs))
    return df[columns]


def detect_frame(frame: pd.DataFrame, model: LoadedModel | None = None, *, sensitivity: float = 1.0,
                 thresholds: Thresholds | None = None, forecasts: HindcastColumns | None = None) -> DetectionResult:
    """Detect anomalies in a readings frame, joined with ``forecasts`` if given (row-aligned); fits
    a model on it (and the forecasts) when none is given."""
    if model is None:
        model = fit_detector(_ordered(frame), source="the input itself (unsupervised)", forecasts=forecasts)
    engine = DetectionEngine(model, sensitivity=lambda _m: sensitivity, thresholds=thresholds)
    return run_engine(engine, frame, forecasts=forecasts)
