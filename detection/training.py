"""Fitting the detector on history, on exactly the features the stream computes.

History is replayed through the feature extractor in time order (:mod:`detection.replay`), so
the detector learns from the very features it will score; only warmed-up, in-order readings
are kept, as only those are scored by the model. Nothing here is saved: see :mod:`models.artifacts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn

from detection.baseline import COUNT, MEAN, DayTypeProfile, FleetTails
from detection.calendar import UTC_CALENDAR, FleetCalendar
from detection.features import FEATURE_INDEX, FEATURE_NAMES, FeatureExtractor
from detection.isolation_forest import DETECTOR_FORMAT, MeterAnomalyDetector
from detection.meter_state import MeterStateStore, Scalar
from detection.replay import ForecastColumns, TimeOrderedReadings
from detection.thresholds import ScorePrior, Thresholds

MAX_TRAINING_ROWS = 200_000
"""Isolation Forest sees max_samples rows per tree; more rows only sharpen the calibration."""
MIN_TRAINING_ROWS = 100
"""Fewer warmed-up readings than this cannot calibrate a tail probability of 1%."""
DAY_TYPE_MIN_METERS = 20
"""Meters that must have seen both day types at an hour before the population's profile is trusted:
its 2.5% and 97.5% quantiles need a couple of dozen."""


class NotEnoughHistoryError(ValueError):
    """The history holds too few warmed-up readings to fit a detector."""


@dataclass
class ModelMetadata:
    version: str
    features: list[str]
    parameters: dict[str, Any]
    contamination: float
    training_window: dict[str, str | None]
    rows: int
    meters: int
    thresholds: dict[str, float]
    """Tail probabilities per severity at sensitivity 1 (INFO, WARNING, CRITICAL)."""
    sklearn_version: str = sklearn.__version__
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    source: str = ""
    forecast_coverage: float = 0.0
    """Share of the training readings that had a (replayed) forecast: 0 means the detector never
    saw a forecast residual and gives it no weight."""
    detector_format: int = 1
    """:data:`detection.isolation_forest.DETECTOR_FORMAT` of the code that trained it (absent, so 1,
    before format 2)."""
    day_types: dict[str, list[float]] = field(default_factory=dict)
    """The population's working/non-working day profile (:class:`detection.baseline.DayTypeProfile`)."""
    fleet_tails: dict[str, list[float]] = field(default_factory=dict)
    """The population's upper tails by hour (:class:`detection.baseline.FleetTails`); empty in models
    trained before they were learnt."""


@dataclass
class TrainedModel:
    """A fitted detector and what it was trained on; ``path`` once saved as an artifact."""

    detector: MeterAnomalyDetector
    metadata: ModelMetadata
    path: Path | None = None

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def day_types(self) -> DayTypeProfile:
        return DayTypeProfile.from_record(self.metadata.day_types)

    @property
    def fleet_tails(self) -> FleetTails:
        return FleetTails.from_record(self.metadata.fleet_tails)

    @property
    def score_prior(self) -> ScorePrior:
        return ScorePrior(self.detector.score_center_, self.detector.score_spread_)


def timestamp_version(moment: datetime | None = None) -> str:
    """A model version name: the UTC time of training, so the newest version sorts last."""
    return (moment or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class History:
    """What a replay of history teaches: the features the detector is fitted on, and the population's
    profiles the features of young meters lean on."""

    matrix: np.ndarray
    """Features of every warmed-up, in-order reading."""
    store: MeterStateStore
    """The meters' state at the end of the replay."""
    tails: FleetTails
    """The fleet's upper tails by hour (:class:`detection.baseline.FleetTails`)."""


def history_features(frame: pd.DataFrame, forecasts: ForecastColumns | None = None,
                     calendar: FleetCalendar = UTC_CALENDAR) -> History:
    """Features of every warmed-up, in-order reading of ``frame``, replayed in time order, with the
    ``forecasts`` (row-aligned with ``frame``) joined as the stream joins the forecasts topic."""
    extractor = FeatureExtractor(calendar=calendar)
    parts, hours, excess = [], [], []
    for _, batch in TimeOrderedReadings(frame, forecasts).batches():
        fb = extractor.transform(batch)
        kept = fb.scored & ~fb.cold & ~fb.late
        parts.append(fb.matrix[kept])
        hours.append(fb.slots.hour_of_day[kept] % 24)
        excess.append((batch.kwh[kept] - fb.baseline[kept]) / np.maximum(fb.level[kept], 1e-9))
    if not parts:
        return History(np.empty((0, len(FEATURE_NAMES))), extractor.store, FleetTails())
    return History(np.vstack(parts), extractor.store, FleetTails.from_readings(np.concatenate(hours),
                                                                              np.concatenate(excess)))


def day_type_profile(store: MeterStateStore) -> DayTypeProfile:
    """How working days compare with the rest, hour by hour, across the meters of a replay.

    Per meter and hour, the log ratio of its working-day to its non-working-day usage (where it has
    seen each at least twice and usage is material); the profile is the population's median ratio
    and its 2.5% and 97.5% quantiles. Hours with too few such meters keep the "unknown" profile.
    """
    n = len(store)
    if n == 0:
        return DayTypeProfile()
    hod = store.hod[:n].astype(np.float64)
    level = store.scalars[:n, Scalar.LEVEL][:, None]
    working, resting = hod[:, :24], hod[:, 24:]
    usable = (working[:, :, COUNT] >= 2) & (resting[:, :, COUNT] >= 2) \
        & (working[:, :, MEAN] > 0.05 * level) & (resting[:, :, MEAN] > 0.05 * level)
    log_ratio = np.log(np.where(usable, working[:, :, MEAN], 1.0) / np.where(usable, resting[:, :, MEAN], 1.0))
    profile = DayTypeProfile()
    ratio, low, high = profile.ratio.copy(), profile.low.copy(), profile.high.copy()
    for h in range(24):
        values = log_ratio[usable[:, h], h]
        if len(values) >= DAY_TYPE_MIN_METERS:
            q_low, q50, q_high = np.exp(np.percentile(values, [2.5, 50, 97.5]))
            ratio[h], low[h], high[h] = float(q50), float(q_low), float(q_high)
    return DayTypeProfile(ratio, low, high)


def fit_detector(frame: pd.DataFrame, *, contamination: float = 0.003, n_estimators: int = 100,
                 random_state: int = 0, source: str = "", forecasts: ForecastColumns | None = None,
                 calendar: FleetCalendar = UTC_CALENDAR) -> TrainedModel:
    """Train on readings (timestamp, meter_id, kwh[, feeder_id, interval_seconds]) and, when given,
    the forecasts that covered them (row-aligned); raises :class:`NotEnoughHistoryError` when
    the history is too short."""
    history = history_features(frame, forecasts, calendar)
    X = history.matrix
    if len(X) < MIN_TRAINING_ROWS:
        raise NotEnoughHistoryError(
            f"only {len(X)} readings of warmed-up meters to train on (at least {MIN_TRAINING_ROWS} needed): "
            "give at least 3 days of history")
    if len(X) > MAX_TRAINING_ROWS:
        X = X[np.random.default_rng(random_state).choice(len(X), MAX_TRAINING_ROWS, replace=False)]
    forecast_column = FEATURE_INDEX["forecast_residual"]
    detector = MeterAnomalyDetector(n_estimators=n_estimators, contamination=contamination, random_state=random_state,
                                    forecast_feature=forecast_column).fit(X)
    metadata = ModelMetadata(
        version=timestamp_version(),
        features=list(FEATURE_NAMES),
        parameters={k: (v if isinstance(v, (int, float, str, type(None))) else str(v))
                    for k, v in detector.get_params().items()},
        contamination=contamination,
        training_window={"start": str(frame["timestamp"].min()), "end": str(frame["timestamp"].max())},
        rows=int(len(X)),
        meters=int(frame["meter_id"].nunique()),
        thresholds=Thresholds().as_dict(),
        source=source,
        forecast_coverage=round(float(np.isfinite(X[:, forecast_column]).mean()), 4),
        detector_format=DETECTOR_FORMAT,
        day_types=day_type_profile(history.store).as_record(),
        fleet_tails=history.tails.as_record(),
    )
    return TrainedModel(detector=detector, metadata=metadata)
