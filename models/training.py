"""Fit the detector on history, on exactly the features the stream computes.

Those features include the forecast residual, which the stream computes from the forecaster's
forecasts. History has no forecasts of its own, so :func:`replay_forecasts` re-runs the forecaster
over it (see :mod:`forecaster.hindcast`) and the detector learns what a residual against a
forecast made before the reading usually looks like.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from forecaster.hindcast import HindcastColumns, forecast_columns
from models.artifacts import DETECTOR_FORMAT, LoadedModel, ModelMetadata, new_version, save_model
from models.isolation_detector import MeterAnomalyDetector
from stream_processors.meter_state import FEATURE_NAMES, FeatureExtractor, time_aligned_chunks

log = logging.getLogger(__name__)

MAX_TRAINING_ROWS = 200_000
"""Isolation Forest sees max_samples rows per tree; more rows only sharpen the calibration."""


def replay_forecasts(frame: pd.DataFrame, settings=None, *, every_seconds: float = 86400.0) -> HindcastColumns:
    """The forecasts the forecaster would have made over ``frame``, with its settings (``WATTSUP_FORECAST_*``),
    had it run every ``every_seconds``. Training replays a run a day (cheap; see
    :mod:`forecaster.hindcast` for why that is conservative), evaluation the configured schedule."""
    from forecaster.hindcast import HindcastPlan, hindcast_readings
    from forecaster.runner import FitPool, fit_options
    from forecaster.settings import ForecastSettings

    settings = settings or ForecastSettings()
    pool = FitPool(settings.workers)
    try:
        return hindcast_readings(frame, fit_options(settings), pool,
                                 HindcastPlan(every_seconds=every_seconds, history_seconds=settings.history_seconds))
    finally:
        pool.close()


def history_features(frame: pd.DataFrame, chunk: int = 20_000, forecasts: HindcastColumns | None = None) -> np.ndarray:
    """Features of every warmed-up, in-order reading of ``frame``, replayed in time order.

    ``forecasts`` (row-aligned with ``frame``) are joined as the stream joins the forecasts topic.
    """
    epoch_ms = frame["timestamp"].dt.as_unit("ms").astype("int64").to_numpy()
    order = np.argsort(epoch_ms, kind="stable")
    frame = frame.iloc[order]
    ts = epoch_ms[order]
    meters = frame["meter_id"].astype(str).tolist()
    kwh = frame["kwh"].to_numpy(dtype=float)
    interval = frame["interval_seconds"].to_numpy(dtype=np.int64)
    groups = peer_groups(frame)
    extractor = FeatureExtractor()
    parts = []
    for s, e in time_aligned_chunks(ts, chunk):
        fb = extractor.transform_batch(meters[s:e], ts[s:e], kwh[s:e], interval[s:e],
                                       *forecast_columns(forecasts, order[s:e]), peer_groups=groups[s:e])
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
                 random_state: int = 0, source: str = "", forecasts: HindcastColumns | None = None) -> LoadedModel:
    """Train on readings (timestamp, meter_id, kwh, interval_seconds) and, when given, the forecasts
    that covered them (see :func:`replay_forecasts`); nothing is saved."""
    from stream_processors.engine import Thresholds

    X = history_features(frame, forecasts=forecasts)
    if len(X) < 100:
        raise ValueError(f"only {len(X)} readings of warmed-up meters to train on; give at least 3 days of history")
    if len(X) > MAX_TRAINING_ROWS:
        X = X[np.random.default_rng(random_state).choice(len(X), MAX_TRAINING_ROWS, replace=False)]
    detector = MeterAnomalyDetector(n_estimators=n_estimators, contamination=contamination, random_state=random_state,
                                    forecast_feature=FEATURE_NAMES.index("forecast_residual")).fit(X)
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
        forecast_coverage=round(float(np.isfinite(X[:, FEATURE_NAMES.index("forecast_residual")]).mean()), 4),
        detector_format=DETECTOR_FORMAT,
    )
    return LoadedModel(detector=detector, metadata=metadata, path=Path())


def train_and_save(frame: pd.DataFrame, model_dir: Path, **kwargs) -> LoadedModel:
    model = fit_detector(frame, **kwargs)
    model.metadata.version = new_version(model_dir)
    model.path = save_model(model_dir, model.detector, model.metadata)
    return model
