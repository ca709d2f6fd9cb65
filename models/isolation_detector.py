"""The WattsUp detector: an Isolation Forest over per-meter, scale-free features.

It follows scikit-learn's conventions (``fit``, ``score_samples`` where higher means more
normal), and adds what a fleet operator needs on top of a raw forest score:

* :meth:`tail_probability`: the share of training readings that scored at least as abnormal.
  Severity thresholds and the runtime sensitivity are expressed in this probability, so
  "sensitivity 2" means "flag twice as many readings", whatever the forest's score scale.
* ``feature_center_`` / ``feature_scale_``: robust location and spread of each feature on the
  training data, used to attribute a flagged reading's score to features (see
  :mod:`stream_processors.explain`).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.ensemble import IsolationForest
from sklearn.utils.validation import check_array, check_is_fitted


class MeterAnomalyDetector(OutlierMixin, BaseEstimator):
    """Isolation Forest plus calibrated tail probabilities.

    Parameters
    ----------
    n_estimators, max_samples, random_state
        Passed to :class:`~sklearn.ensemble.IsolationForest`.
    contamination
        Expected share of abnormal readings; :meth:`predict` flags readings whose tail
        probability is at most this (it does not change the forest).
    """

    def __init__(self, n_estimators: int = 100, max_samples: int | str = 512, contamination: float = 0.003,
                 random_state: int | None = 0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = contamination
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> MeterAnomalyDetector:
        X = check_array(X, dtype=np.float64)
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                       random_state=self.random_state, n_jobs=1).fit(X)
        scores = -self.forest_.score_samples(X)
        self.train_scores_ = np.sort(scores)
        self.feature_center_ = np.median(X, axis=0)
        q75, q25 = np.percentile(X, [75, 25], axis=0)
        scale = np.maximum((q75 - q25) / 1.349, np.maximum(X.std(axis=0) * 0.1, 1e-3))
        # A feature constant in training (forecast_residual when the history had no forecasts)
        # keeps its natural unit, so it cannot swamp every explanation by a tiny spread.
        self.feature_scale_ = np.where(X.std(axis=0) > 0, scale, 1.0)
        self.n_features_in_ = X.shape[1]
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Opposite of the anomaly score (scikit-learn convention: lower is more abnormal)."""
        check_is_fitted(self, "forest_")
        return self.forest_.score_samples(check_array(X, dtype=np.float64))

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        """Higher is more abnormal (about 0.35 for typical readings up to about 0.8)."""
        return -self.score_samples(X)

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
