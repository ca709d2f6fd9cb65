"""The WattsUp detector: an Isolation Forest over per-meter, scale-free features.

It follows scikit-learn's conventions (``fit``, ``score_samples`` where higher means more
normal), and adds what a fleet operator needs on top of a raw forest score:

* Readings without a forecast are scored by a forest that never saw the forecast residual, so
  detection is as good without the forecaster as it would be had it never existed; readings
  with one by a forest that also weighs it (see ``forecast_feature``).
* :meth:`tail_probability`: the share of training readings that scored at least as abnormal.
  Severity thresholds and the runtime sensitivity are expressed in this probability, so
  "sensitivity 2" means "flag twice as many readings", whatever the forest's score scale.
* ``feature_center_`` / ``feature_scale_``: robust location and spread of each feature on the
  training data, used to attribute a flagged reading's score to features (see
  :mod:`detection.explain`).
* ``score_center_`` / ``score_spread_``: the median training score and its robust spread, what a
  meter's own score statistics start from (see :mod:`detection.thresholds`).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.ensemble import IsolationForest
from sklearn.utils.validation import check_array, check_is_fitted

DETECTOR_FORMAT = 3
"""Bumped when a saved detector no longer fits the scoring code: 2 added the forecast forest and
takes a missing (NaN) forecast residual, where format 1 took 0; 3 scores the features of real
meters (zero regimes, registers, level shifts, catch-ups) and keeps its population's score statistics."""


class MeterAnomalyDetector(OutlierMixin, BaseEstimator):
    """Isolation Forest plus calibrated tail probabilities.

    Parameters
    ----------
    n_estimators, max_samples, random_state
        Passed to :class:`~sklearn.ensemble.IsolationForest`.
    contamination
        Expected share of abnormal readings; :meth:`predict` flags readings whose tail
        probability is at most this (it does not change the forest).
    forecast_feature
        Index of a column that is NaN where a reading had no forecast (the forecast residual).
        Two forests are fitted: one without that column, which scores readings without a
        forecast exactly as a detector that never saw forecasts would, and one with it, fitted on
        the readings that had a forecast (when there are at least ``max_samples`` of them). The
        second forest's scores are mapped onto the first's scale by their training quantiles, so
        one score scale, one calibration and one per-meter threshold serve both. A reading with
        a forecast scores the lesser of the two: the forecast can explain a reading away (a
        holiday or a trend Prophet knows of), but it does not raise one the meter's own history
        finds ordinary; that combined score is mapped by its own training quantiles again, so
        readings with forecasts are flagged as often as readings without (the README compares
        this with the forecast forest deciding alone). ``None``: one forest over every column,
        which must then be finite.
    """

    def __init__(self, n_estimators: int = 100, max_samples: int | str = 512, contamination: float = 0.003,
                 random_state: int | None = 0, forecast_feature: int | None = None) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = contamination
        self.random_state = random_state
        self.forecast_feature = forecast_feature

    def _forest(self, X: np.ndarray) -> tuple[IsolationForest, np.ndarray]:
        forest = IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                 random_state=self.random_state, n_jobs=1).fit(X)
        return forest, np.sort(-forest.score_samples(X))

    def _check(self, X: np.ndarray) -> np.ndarray:
        return check_array(X, dtype=np.float64, ensure_all_finite="allow-nan" if self.forecast_feature is not None else True)

    def fit(self, X: np.ndarray, y: None = None) -> MeterAnomalyDetector:
        X = self._check(X)
        n_features = X.shape[1]
        base = np.ones(n_features, dtype=bool)
        has_forecast = np.zeros(len(X), dtype=bool)
        if self.forecast_feature is not None:
            base[self.forecast_feature] = False
            has_forecast = np.isfinite(X[:, self.forecast_feature])
            if np.isnan(X[:, base]).any():
                raise ValueError("only the forecast feature may be NaN")
        self.base_features_ = np.flatnonzero(base)
        self.forest_, self.train_scores_ = self._forest(X[:, self.base_features_])
        q25, q50, q75 = np.percentile(self.train_scores_, [25, 50, 75])
        self.score_center_ = float(q50)
        self.score_spread_ = float(max((q75 - q25) / 1.349, 1e-3))
        min_rows = self.max_samples if isinstance(self.max_samples, int) else 256
        self.forecast_forest_: IsolationForest | None = None
        self.forecast_train_scores_: np.ndarray | None = None
        self.combined_train_scores_: np.ndarray | None = None
        if has_forecast.sum() >= min_rows:
            self.forecast_forest_, self.forecast_train_scores_ = self._forest(X[has_forecast])
            base_scores = -self.forest_.score_samples(X[has_forecast][:, self.base_features_])
            self.combined_train_scores_ = np.sort(self._combined(X[has_forecast], base_scores))
        # Explanations measure each feature's deviation from its typical value in training.
        filled = np.where(np.isfinite(X), X, 0.0)
        self.feature_center_ = np.median(filled, axis=0)
        q75, q25 = np.percentile(filled, [75, 25], axis=0)
        scale = np.maximum((q75 - q25) / 1.349, np.maximum(filled.std(axis=0) * 0.1, 1e-3))
        # A feature constant in training keeps its natural unit, so it cannot swamp every
        # explanation by a tiny spread.
        self.feature_scale_ = np.where(filled.std(axis=0) > 0, scale, 1.0)
        if self.forecast_feature is not None and self.forecast_forest_ is None:
            # not learned, so no part of any score: it explains nothing
            self.feature_scale_[self.forecast_feature] = np.inf
        self.n_features_in_ = n_features
        return self

    @property
    def uses_forecasts(self) -> bool:
        """Whether the detector learned the forecast feature (the history had enough forecasts)."""
        return getattr(self, "forecast_forest_", None) is not None

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        """Higher is more abnormal (about 0.35 for typical readings up to about 0.8)."""
        check_is_fitted(self, "forest_")
        X = self._check(X)
        scores = -self.forest_.score_samples(X[:, self.base_features_])
        if self.uses_forecasts and len(X):
            rows = np.isfinite(X[:, self.forecast_feature])
            if rows.any():
                scores[rows] = self._onto_base_scale(self._combined(X[rows], scores[rows]), self.combined_train_scores_)
        return scores

    def _combined(self, X: np.ndarray, base_scores: np.ndarray) -> np.ndarray:
        """Rows with a forecast: the lesser of the two forests' scores (``base_scores`` are the base
        forest's, already computed), on the base forest's scale."""
        with_forecast = self._onto_base_scale(-self.forecast_forest_.score_samples(X), self.forecast_train_scores_)
        return np.minimum(with_forecast, base_scores)

    def _onto_base_scale(self, scores: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """The base forest's score at the same quantile of ``ref`` (training scores of the same
        kind); beyond the training range, shifted."""
        base = self.train_scores_
        quantile = np.searchsorted(ref, scores, side="left") / len(ref)
        mapped = np.quantile(base, np.clip(quantile, 0.0, 1.0))
        above, below = scores > ref[-1], scores < ref[0]
        mapped[above] = base[-1] + (scores[above] - ref[-1])
        mapped[below] = base[0] + (scores[below] - ref[0])
        return mapped

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Opposite of the anomaly score (scikit-learn convention: lower is more abnormal)."""
        return -self.anomaly_score(X)

    def tail_probability(self, anomaly_scores: np.ndarray) -> np.ndarray:
        """Share of training readings scoring at least this abnormal (1 = typical, ~0 = rare)."""
        check_is_fitted(self, "train_scores_")
        n = len(self.train_scores_)
        above = n - np.searchsorted(self.train_scores_, anomaly_scores, side="left")
        return (above + 1.0) / (n + 1.0)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Positive for inliers, negative for outliers at the configured contamination."""
        return np.log(self.tail_probability(self.anomaly_score(X)) / self.contamination)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.where(self.decision_function(X) < 0, -1, 1)
