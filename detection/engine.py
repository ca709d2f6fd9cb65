"""Scoring a batch of readings: features, one model call, thresholds, explanations.

:class:`DetectionEngine` is the one engine behind the stream worker, ``wattsup detect`` and the
dashboard's CSV upload. Per batch it builds one feature matrix, calls the model **once** for the
rows of warmed-up meters, scores cold-start meters with baseline rules, applies thresholds that
adapt per meter (:mod:`detection.thresholds`), and explains only the flagged rows.

The constants (1.2% INFO tail probability, 2 spreads per meter, rule durations) were chosen on
simulated fleets and checked on fleets not used to choose them and on 15-minute data; the
README gives the figures, and ``wattsup evaluate`` measures them on any labelled file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detection.explain import DEFAULT_SCALE, explain_rows
from detection.features import FeatureBatch, FeatureExtractor
from detection.meter_state import MeterStateStore
from detection.readings import ReadingBatch
from detection.rules import rule_scores
from detection.thresholds import Thresholds, gate_by_meter_history, per_reading_scale, severities
from detection.training import TrainedModel

BASELINE_RULES = "baseline-rules"
"""Model version of readings judged by the rules alone (young meters, or no trained model)."""


@dataclass
class ScoredBatch:
    features: FeatureBatch
    score: np.ndarray
    tail_probability: np.ndarray
    flag: np.ndarray
    severity: np.ndarray
    model_version: np.ndarray
    anomalies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def scored(self) -> int:
        return int(self.features.scored.sum())

    @property
    def duplicates(self) -> int:
        return int(self.features.duplicate.sum())


class DetectionEngine:
    """Scores batches of readings against the meters' state, which it advances."""

    def __init__(
        self,
        model: TrainedModel | None,
        store: MeterStateStore | None = None,
        *,
        sensitivity: Callable[[str], float] | None = None,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.model = model
        self.extractor = FeatureExtractor(store)
        self.sensitivity = sensitivity or (lambda _meter: 1.0)
        self.thresholds = thresholds or Thresholds()

    @property
    def store(self) -> MeterStateStore:
        return self.extractor.store

    @property
    def model_version(self) -> str:
        return self.model.version if self.model else BASELINE_RULES

    def score(self, batch: ReadingBatch, *, build_anomalies: bool = True) -> ScoredBatch:
        """Score a batch; readings are compared with their peers (``batch.peer_groups``, default:
        the feeder of each reading)."""
        n = len(batch)
        interval_s = batch.interval_s
        rows = self.store.rows_for(batch.meter_ids)
        fb = self.extractor.transform(batch, rows=rows)
        scored = fb.scored
        use_model = scored & ~fb.cold if self.model else np.zeros(n, dtype=bool)
        use_rules = scored & ~use_model

        score = np.zeros(n)
        tail = np.ones(n)
        th = self.thresholds
        if use_model.any():
            detector = self.model.detector
            s = detector.anomaly_score(fb.matrix[use_model])
            score[use_model] = s
            tail[use_model] = detector.tail_probability(s)
        if use_rules.any():
            score[use_rules], tail[use_rules] = rule_scores(fb, use_rules, interval_s, th)

        sens = np.fromiter((self.sensitivity(m) for m in batch.meter_ids), dtype=np.float64, count=n)
        scale = per_reading_scale(sens, interval_s)
        flag = scored & (tail <= th.info * scale)
        gate_by_meter_history(self.store, fb, rows, use_model, score, flag, sens, interval_s, th)
        if use_model.any():
            # Outages and stuck registers are known failure modes with a plain definition: the
            # rules flag them on warmed-up meters too.
            _, rule_tail = rule_scores(fb, use_model, interval_s, th, spikes=False)
            hit = rule_tail <= th.info * scale[use_model]
            idx = np.flatnonzero(use_model)[hit]
            flag[idx] = True
            tail[idx] = np.minimum(tail[idx], rule_tail[hit])

        severity = severities(flag, tail, scale, th)
        model_version = np.where(use_model, self.model_version, BASELINE_RULES).astype(object)
        result = ScoredBatch(fb, score, tail, flag, severity, model_version)
        if build_anomalies and flag.any():
            result.anomalies = self._anomalies(result, batch)
        return result

    def _anomalies(self, result: ScoredBatch, batch: ReadingBatch) -> list[dict[str, Any]]:
        """Anomaly records (the Avro ``Anomaly`` fields) of the flagged rows, explained."""
        fb = result.features
        kwh, ts = batch.kwh, batch.timestamps_ms
        idx = np.flatnonzero(result.flag)
        detector = self.model.detector if self.model else None
        detected_at = int(time.time() * 1000)
        out: list[dict[str, Any]] = []
        for rows, center, scale in (
            (idx[result.model_version[idx] != BASELINE_RULES],
             detector.feature_center_ if detector else None, detector.feature_scale_ if detector else None),
            (idx[result.model_version[idx] == BASELINE_RULES], np.zeros(len(DEFAULT_SCALE)), DEFAULT_SCALE),
        ):
            if len(rows) == 0:
                continue
            for i, (kind, causes) in zip(rows, explain_rows(fb, rows, kwh, batch.interval_s, center, scale)):
                has_forecast = bool(np.isfinite(fb.expected[i]))
                has_band = bool(np.isfinite(fb.lower[i]) and np.isfinite(fb.upper[i]))
                out.append({
                    "meter_id": batch.meter_ids[i],
                    "feeder_id": batch.feeder_ids[i],
                    "timestamp": int(ts[i]),
                    "observed": float(kwh[i]),
                    "expected": float(fb.expected[i]) if has_forecast else None,
                    "lower": float(fb.lower[i]) if has_band else None,
                    "upper": float(fb.upper[i]) if has_band else None,
                    "residual": float(kwh[i] - fb.expected[i]) if has_forecast else None,
                    "band_residual": float(fb.band_residual[i]) if has_forecast else None,
                    "baseline": float(fb.baseline[i]),
                    "score": float(result.score[i]),
                    "severity": str(result.severity[i]),
                    "kind": kind,
                    "causes": [c.as_record() for c in causes],
                    "model_version": str(result.model_version[i]),
                    "detected_at": detected_at,
                })
        out.sort(key=lambda a: (a["timestamp"], a["meter_id"]))
        return out
