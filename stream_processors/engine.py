"""Scoring a batch of readings: features, one model call, thresholds, explanations.

:class:`DetectionEngine` is the one engine behind the stream worker, ``wattsup detect`` and the
dashboard's CSV upload. Per batch it builds one feature matrix, calls the model **once** for the
rows of warmed-up meters, scores cold-start meters with baseline rules, applies thresholds that
adapt per meter, and explains only the flagged rows.

Thresholds. A reading is flagged when (1) its tail probability under the model (the share of
training readings that scored at least as abnormal) is below the INFO threshold times the
meter's sensitivity, and (2) once the meter has a score history, its score is also at least
``meter_z`` standard deviations above that meter's own usual score, so a meter that is always a
little unusual does not alarm all day. Severity comes from the same tail probability:
INFO / WARNING / CRITICAL at 1.2% / 0.05% / 0.01% at sensitivity 1 for hourly readings, scaled
down for shorter intervals so alarms per hour do not grow with the reading rate. (3) Outages
and stuck registers are also flagged by plain rules on every meter (see :meth:`DetectionEngine._rules`).

The constants (1.2%, 2 spreads, rule durations) were chosen on simulated fleets (seeds 202, 303,
404, a model trained on seed 1001) and checked on a fleet not used for choosing them (505) and
on 15-minute data; ``wattsup evaluate`` measures them on any labelled file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.artifacts import LoadedModel
from stream_processors.explain import DEFAULT_SCALE, explain_rows
from stream_processors.meter_state import F, FeatureBatch, FeatureExtractor, MeterStateStore, round_indices

BASELINE_RULES = "baseline-rules"
SEVERITIES = ("INFO", "WARNING", "CRITICAL")


@dataclass(frozen=True)
class Thresholds:
    """Tail probabilities per severity at sensitivity 1, for hourly readings.

    Operators count false alarms per meter and day, not per reading: a 15-minute meter sends
    four readings an hour, so its per-reading thresholds are a quarter of these (scaled by the
    interval up to one hour; hourly, daily and longer intervals use them as they are).
    """

    info: float = 0.012
    warning: float = 0.0005
    critical: float = 0.0001
    meter_z: float = 2.0
    """How far above its own usual score a warmed-up meter's reading must be."""
    meter_history: int = 48
    """Model-scored readings a meter needs before its own score spread is trusted."""
    outage_hours: float = 2.0
    """Zero consumption this long, where usage is usual, is an outage whatever the model says."""
    stuck_hours: float = 3.0
    stuck_intervals: int = 3
    """A non-zero reading repeated this long (and this many times) is a stuck meter."""

    def as_dict(self) -> dict[str, float]:
        return {"INFO": self.info, "WARNING": self.warning, "CRITICAL": self.critical}


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
    def __init__(
        self,
        model: LoadedModel | None,
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

    def score(
        self,
        meter_ids: list[str],
        feeder_ids: list[str],
        timestamps_ms: np.ndarray,
        kwh: np.ndarray,
        interval_s: np.ndarray,
        expected: np.ndarray | None = None,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        *,
        peer_groups: list[str] | np.ndarray | None = None,
        build_anomalies: bool = True,
    ) -> ScoredBatch:
        """Score a batch; readings are compared with their peers in ``peer_groups`` (default: the
        feeder of each reading)."""
        n = len(meter_ids)
        kwh = np.asarray(kwh, dtype=np.float64)
        interval_s = np.asarray(interval_s, dtype=np.int64)
        timestamps_ms = np.asarray(timestamps_ms, dtype=np.int64)
        rows = self.store.rows_for(meter_ids)
        fb = self.extractor.transform_batch(meter_ids, timestamps_ms, kwh, interval_s, expected, lower, upper,
                                            peer_groups=feeder_ids if peer_groups is None else peer_groups,
                                            rows=rows)
        scored = fb.scored
        use_model = scored & ~fb.cold if self.model else np.zeros(n, dtype=bool)
        use_rules = scored & ~use_model

        score = np.zeros(n)
        tail = np.ones(n)
        if use_model.any():
            detector = self.model.detector
            s = detector.anomaly_score(fb.matrix[use_model])
            score[use_model] = s
            tail[use_model] = detector.tail_probability(s)
        if use_rules.any():
            score[use_rules], tail[use_rules] = self._rules(fb, use_rules, kwh, interval_s)

        sens = np.fromiter((self.sensitivity(m) for m in meter_ids), dtype=np.float64, count=n)
        # tail thresholds scale with sensitivity and the interval (alarms per hour, not per reading)
        per_reading = sens * np.minimum(interval_s / 3600.0, 1.0)
        th = self.thresholds
        flag = scored & (tail <= th.info * per_reading)
        self._adapt_per_meter(fb, rows, use_model, score, flag, sens, interval_s)
        if use_model.any():
            # Outages and stuck registers are known failure modes with a plain definition: the
            # rules flag them on warmed-up meters too, where the forest ranks a short outage
            # with the ordinary dips it saw in training.
            _, rule_tail = self._rules(fb, use_model, kwh, interval_s, spikes=False)
            hit = rule_tail <= th.info * per_reading[use_model]
            idx = np.flatnonzero(use_model)[hit]
            flag[idx] = True
            tail[idx] = np.minimum(tail[idx], rule_tail[hit])

        severity = np.full(n, "", dtype=object)
        severity[flag] = "INFO"
        severity[flag & (tail <= th.warning * per_reading)] = "WARNING"
        severity[flag & (tail <= th.critical * per_reading)] = "CRITICAL"
        model_version = np.where(use_model, self.model_version, BASELINE_RULES).astype(object)

        result = ScoredBatch(fb, score, tail, flag, severity, model_version)
        if build_anomalies and flag.any():
            result.anomalies = self._anomalies(result, meter_ids, feeder_ids, timestamps_ms, kwh, interval_s)
        return result

    def _adapt_per_meter(self, fb: FeatureBatch, rows: np.ndarray, use_model: np.ndarray, score: np.ndarray,
                         flag: np.ndarray, sens: np.ndarray, interval_s: np.ndarray) -> None:
        """Per-meter thresholds: a model-flagged reading must also stand out for its own meter.

        Each meter keeps an exponentially weighted mean and variance of its unflagged scores;
        once it has ``meter_history`` model-scored readings, a reading is flagged only if its
        score is ``meter_z`` of its own spreads above its usual score. Readings are taken in the
        feature extractor's rounds (the k-th reading of every meter in round k), so a meter's
        statistics advance reading by reading and the result does not depend on how readings
        were cut into micro-batches: the stream and ``wattsup detect`` agree exactly.
        """
        th = self.thresholds
        sc = self.store.scalars
        st = self.store
        needed_hours = 48 + th.meter_history * interval_s / 3600.0
        alpha = 0.02
        for in_round in round_indices(fb.round):
            idx = in_round[use_model[in_round]]
            if len(idx) == 0:
                continue
            r = rows[idx]
            m_mean, m_var = sc[r, st.S_SCORE_MEAN], sc[r, st.S_SCORE_VAR]
            ready = fb.history_hours[idx] >= needed_hours[idx]
            meter_z = (score[idx] - m_mean) / np.sqrt(m_var + 1e-4)
            flag[idx] &= ~ready | (meter_z >= th.meter_z / np.sqrt(sens[idx]))
            # Advance the statistics with the unflagged, in-order readings.
            upd = ~flag[idx] & ~fb.late[idx]
            if not upd.any():
                continue
            r, s, mean0, var0 = r[upd], score[idx][upd], m_mean[upd], m_var[upd]
            fresh = (var0 == 0) & (mean0 == 0)
            mean = np.where(fresh, s, mean0)
            delta = s - mean
            sc[r, st.S_SCORE_MEAN] = mean + alpha * delta
            sc[r, st.S_SCORE_VAR] = np.where(fresh, 0.0025, (1 - alpha) * (var0 + alpha * delta * delta))

    def _rules(self, fb: FeatureBatch, mask: np.ndarray, kwh: np.ndarray, interval_s: np.ndarray, *,
               spikes: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Baseline rules: every meter's outages and stuck registers, cold meters' spikes.

        Scores in [0, 1] reach 0.5 (flag) at a rule's threshold and 1 at twice it: a reading 4x its
        baseline and 6 spreads above it (once a day of history shows what is usual); a non-zero
        reading unchanged for ``stuck_hours`` and ``stuck_intervals``; zero consumption for
        ``outage_hours`` where the slot's usual usage is at least a quarter of the meter's mean.
        Returns (score, pseudo tail probability) so the shared thresholds and severities apply.
        """
        th = self.thresholds
        m = fb.matrix[mask]
        ratio = np.exp(m[:, F["usage_vs_baseline"]])
        z = m[:, F["baseline_z"]]
        known = fb.history_hours[mask] >= 24
        spike = np.where(spikes & known & (ratio >= 4) & (z >= 6), np.minimum(0.5 * z / 6, 1.0), 0.0)
        unchanged_n = fb.unchanged_intervals[mask] + 1  # readings with the same value, this one included
        unchanged_h = unchanged_n * interval_s[mask] / 3600.0
        stuck_run = (unchanged_h >= th.stuck_hours) & (unchanged_n >= th.stuck_intervals)
        stuck = np.where(stuck_run, np.minimum(0.5 * unchanged_h / th.stuck_hours, 1.0), 0.0)
        zero_h = fb.zero_hours[mask] * (fb.usual_share[mask] >= 0.25)
        outage = np.where(zero_h >= th.outage_hours, np.minimum(0.5 * zero_h / th.outage_hours, 1.0), 0.0)
        score = np.maximum.reduce([spike, stuck, outage])
        tail = np.where(score >= 0.5, 1e-3 * (1.0 - score) + 1e-5, 1.0)
        return score, tail

    def _anomalies(self, result: ScoredBatch, meter_ids: list[str], feeder_ids: list[str], ts: np.ndarray,
                   kwh: np.ndarray, interval_s: np.ndarray) -> list[dict[str, Any]]:
        fb = result.features
        idx = np.flatnonzero(result.flag)
        detector = self.model.detector if self.model else None
        detected_at = int(time.time() * 1000)
        out: list[dict[str, Any]] = []
        for model_rows, center, scale in (
            (idx[result.model_version[idx] != BASELINE_RULES],
             detector.feature_center_ if detector else None, detector.feature_scale_ if detector else None),
            (idx[result.model_version[idx] == BASELINE_RULES], np.zeros(len(DEFAULT_SCALE)), DEFAULT_SCALE),
        ):
            if len(model_rows) == 0:
                continue
            for i, (kind, causes) in zip(model_rows, explain_rows(fb, model_rows, kwh, interval_s, center, scale)):
                has_forecast = bool(np.isfinite(fb.expected[i]))
                has_band = bool(np.isfinite(fb.lower[i]) and np.isfinite(fb.upper[i]))
                out.append({
                    "meter_id": meter_ids[i],
                    "feeder_id": feeder_ids[i],
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
