"""Fit the detector on history, on exactly the features the stream computes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from models.artifacts import LoadedModel, ModelMetadata, new_version, save_model
from models.isolation_detector import MeterAnomalyDetector
from stream_processors.meter_state import FEATURE_NAMES, FeatureExtractor, time_aligned_chunks

log = logging.getLogger(__name__)

MAX_TRAINING_ROWS = 200_000
"""Isolation Forest sees max_samples rows per tree; more rows only sharpen the calibration."""


def history_features(frame: pd.DataFrame, chunk: int = 20_000) -> np.ndarray:
    """Features of every warmed-up, in-order reading of ``frame``, replayed in time order."""
    frame = frame.sort_values("timestamp", kind="stable")
    ts = frame["timestamp"].dt.as_unit("ms").astype("int64").to_numpy()
    meters = frame["meter_id"].astype(str).tolist()
    kwh = frame["kwh"].to_numpy(dtype=float)
    interval = frame["interval_seconds"].to_numpy(dtype=np.int64)
    groups = peer_groups(frame)
    extractor = FeatureExtractor()
    parts = []
    for s, e in time_aligned_chunks(ts, chunk):
        fb = extractor.transform_batch(meters[s:e], ts[s:e], kwh[s:e], interval[s:e], peer_groups=groups[s:e])
        keep = fb.scored & ~fb.cold & ~fb.late
        parts.append(fb.matrix[keep])
    return np.vstack(parts) if parts else np.empty((0, len(FEATURE_NAMES)))


def peer_groups(frame: pd.DataFrame) -> np.ndarray:
    """Whom each reading is compared with: its feeder, or the whole file when there are no feeders.

    A CSV of meters without feeder ids is usually one site or one village: its meters share
    weather, holidays and weekly rhythm, so together they are the peer group.
    """
    if "feeder_id" in frame and not frame["feeder_id"].astype(str).eq(frame["meter_id"].astype(str)).all():
        return frame["feeder_id"].astype(str).to_numpy()
    return np.full(len(frame), "all", dtype=object)


def fit_detector(frame: pd.DataFrame, *, contamination: float = 0.003, n_estimators: int = 100,
                 random_state: int = 0, source: str = "") -> LoadedModel:
    """Train on readings (timestamp, meter_id, kwh, interval_seconds); nothing is saved."""
    from stream_processors.engine import Thresholds

    X = history_features(frame)
    if len(X) < 100:
        raise ValueError(f"only {len(X)} readings of warmed-up meters to train on; give at least 3 days of history")
    if len(X) > MAX_TRAINING_ROWS:
        X = X[np.random.default_rng(random_state).choice(len(X), MAX_TRAINING_ROWS, replace=False)]
    detector = MeterAnomalyDetector(n_estimators=n_estimators, contamination=contamination,
                                    random_state=random_state).fit(X)
    metadata = ModelMetadata(
        version=new_version(Path("/nonexistent")),
        features=list(FEATURE_NAMES),
        parameters={k: (v if isinstance(v, (int, float, str, type(None))) else str(v))
                    for k, v in detector.get_params().items()},
        contamination=contamination,
        training_window={"start": str(frame["timestamp"].min()), "end": str(frame["timestamp"].max())},
        rows=int(len(X)),
        meters=int(frame["meter_id"].nunique()),
        thresholds=Thresholds().as_dict(),
        source=source,
    )
    return LoadedModel(detector=detector, metadata=metadata, path=Path())


def train_and_save(frame: pd.DataFrame, model_dir: Path, **kwargs) -> LoadedModel:
    model = fit_detector(frame, **kwargs)
    model.metadata.version = new_version(model_dir)
    model.path = save_model(model_dir, model.detector, model.metadata)
    return model
