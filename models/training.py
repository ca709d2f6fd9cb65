"""Training entry points: fit the detector on history (with replayed forecasts) and save a version.

History has no forecasts of its own (the forecasts topic is compacted), so
:func:`replay_forecasts` re-runs the forecaster over it (see :mod:`forecaster.hindcast`) and the
detector learns what a residual against a forecast made before the reading usually looks like.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from detection.training import TrainedModel, fit_detector
from forecaster.hindcast import HindcastColumns, HindcastPlan, hindcast_readings
from forecaster.runner import FitPool, fit_options
from forecaster.settings import ForecastSettings
from models.artifacts import new_version, save_model

log = logging.getLogger(__name__)


def replay_forecasts(frame: pd.DataFrame, settings: ForecastSettings | None = None, *,
                     every_seconds: float = 86400.0) -> HindcastColumns:
    """The forecasts the forecaster would have made over ``frame``, with its settings (``WATTSUP_FORECAST_*``),
    had it run every ``every_seconds``. Training replays a run a day (cheap; see
    :mod:`forecaster.hindcast` for why that is conservative), evaluation the configured schedule."""
    settings = settings or ForecastSettings()
    pool = FitPool(settings.workers)
    try:
        return hindcast_readings(frame, fit_options(settings), pool,
                                 HindcastPlan(every_seconds=every_seconds, history_seconds=settings.history_seconds))
    finally:
        pool.close()


def train_and_save(frame: pd.DataFrame, model_dir: Path, **kwargs: Any) -> TrainedModel:
    """Fit on ``frame`` (see :func:`detection.training.fit_detector` for ``kwargs``) and save a new version."""
    model = fit_detector(frame, **kwargs)
    model.metadata.version = new_version(model_dir)
    model.path = save_model(model_dir, model.detector, model.metadata)
    return model
