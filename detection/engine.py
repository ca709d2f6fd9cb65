"""Scoring a batch of readings: features, one model call, thresholds, rules, explanations.

:class:`DetectionEngine` is the one engine behind the stream worker, ``wattsup detect`` and the
dashboard's CSV upload. Per batch it builds one feature matrix, calls the model **once** for the
rows of warmed-up meters, flags what stands out for each meter (:mod:`detection.thresholds`),
adds what the rules find on every meter (outages, stuck registers, catch-ups, level shifts:
:mod:`detection.rules`), and explains only the flagged rows. The README gives the measured
quality; ``wattsup evaluate`` measures it on any labelled file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detection.baseline import UNKNOWN_DAY_TYPES, UNKNOWN_FLEET_TAILS
from detection.calendar import UTC_CALENDAR, FleetCalendar
from detection.explain import DEFAULT_SCALE, explain_rows
from detection.features import FeatureBatch, FeatureExtractor
from detection.meter_state import MeterStateStore
from detection.readings import ReadingBatch
from detection.rules import apply_rules
from detection.thresholds import ScorePrior, Thresholds, flag_by_meter, per_reading_scale, severities
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
    rule: np.ndarray
    """The rule that flagged each reading ("" where none did)."""
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
        calendar: FleetCalendar = UTC_CALENDAR,
    ) -> None:
        self.extractor = FeatureExtractor(store, calendar)
        self.sensitivity = sensitivity or (lambda _meter: 1.0)
        self.thresholds = thresholds or Thresholds()
        self.model = model

    @property
    def model(self) -> TrainedModel | None:
        return self._model

    @model.setter
    def model(self, model: TrainedModel | None) -> None:
        """A new model brings its population's day types, upper tails and score statistics with it."""
        self._model = model
        self.extractor.day_types = model.day_types if model else UNKNOWN_DAY_TYPES
        self.extractor.fleet_tails = model.fleet_tails if model else UNKNOWN_FLEET_TAILS
        self.score_prior = model.score_prior if model else ScorePrior()

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
        rows = self.store.rows_for(batch.meter_ids)
        fb = self.extractor.transform(batch, rows=rows)
        scored = fb.scored
        use_model = scored & ~fb.cold if self.model else np.zeros(n, dtype=bool)

        score = np.zeros(n)
        tail = np.ones(n)
        if use_model.any():
            detector = self.model.detector
            s = detector.anomaly_score(fb.matrix[use_model])
            score[use_model] = s
            tail[use_model] = detector.tail_probability(s)

        sens = np.fromiter((self.sensitivity(m) for m in batch.meter_ids), dtype=np.float64, count=n)
        scale = per_reading_scale(sens, batch.interval_s)
        flag = flag_by_meter(self.store, fb, rows, use_model, score, scale, self.thresholds, self.score_prior, sens)
        # Rules on every meter: outages, stuck registers, catch-ups and level shifts have a plain
        # definition; spikes too where no model scores the reading.
        findings = apply_rules(fb, scored, sens, spikes=self.model is None)
        rule = np.full(n, "", dtype=object)
        strength = np.zeros(n)
        at = np.flatnonzero(scored)
        rule[at], strength[at] = findings.rule, np.where(findings.hit, findings.strength, 0.0)
        flag |= strength > 0
        no_model = scored & ~use_model
        score[no_model] = np.minimum(strength[no_model] / 2.0, 1.0)

        severity = severities(flag, tail, fb.feature("deviation"), strength, scale, self.thresholds)
        model_version = np.where(use_model, self.model_version, BASELINE_RULES).astype(object)
        result = ScoredBatch(fb, score, tail, flag, severity, model_version, rule)
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
            for i, (kind, causes) in zip(rows, explain_rows(fb, rows, kwh, batch.interval_s, center, scale,
                                                            result.rule[rows])):
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
