"""Detection quality, measured on labelled readings: ``wattsup evaluate``.

Point level: each reading is a prediction (flagged or not) against its label.

Event level, the way an operator experiences it:

* a true **event** is a maximal run of labelled readings of one meter (or a labelled event id);
  it is *detected* if any flagged reading falls inside it; detection delay is the time from the
  event's first reading to its first flagged reading;
* an **alarm episode** is a maximal run of flagged readings of one meter (gaps of up to two
  readings merge); it is a *true alarm* if it overlaps an event or starts within two readings
  after one ends (the recovery from an outage is part of that outage);
* event precision = true alarm episodes / all alarm episodes; event recall = detected events /
  all events; false alarms per 1,000 readings counts false alarm episodes.

Compared in one run: the WattsUp detector (and, with ``--detectors``, Local Outlier Factor and
One-Class SVM on the same features and thresholds-by-contamination), and two baselines: a
trailing rolling z-score threshold per meter and a plain Isolation Forest on the raw value with
contamination 0.01, the approach of the original prototype.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from detection.features import FEATURE_INDEX, FeatureExtractor
from detection.replay import TimeOrderedReadings

MERGE_GAP = 2
RECOVERY_GRACE = 2


@dataclass
class QualityReport:
    detector: str
    point_precision: float
    point_recall: float
    point_f1: float
    pr_auc: float
    event_precision: float
    event_recall: float
    event_f1: float
    false_alarms_per_1000: float
    median_delay_hours: float
    events: int
    alarm_episodes: int
    readings: int
    group: str = "all"
    """Which readings: all of them, or one archetype's (see :func:`evaluate_groups`)."""

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _runs(flags: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Inclusive (start, end) positions of runs of True, merging gaps of up to ``gap``."""
    pos = np.flatnonzero(flags)
    if len(pos) == 0:
        return []
    breaks = np.flatnonzero(np.diff(pos) > gap + 1)
    starts = np.r_[pos[0], pos[breaks + 1]]
    ends = np.r_[pos[breaks], pos[-1]]
    return list(zip(starts.tolist(), ends.tolist()))


def evaluate_flags(frame: pd.DataFrame, flag: np.ndarray, score: np.ndarray, detector: str) -> QualityReport:
    """``frame`` has timestamp, meter_id, label (and optionally event_id), in any order."""
    df = pd.DataFrame({
        "meter_id": frame["meter_id"].to_numpy(), "timestamp": frame["timestamp"].to_numpy(),
        "label": frame["label"].to_numpy().astype(bool), "flag": np.asarray(flag, dtype=bool),
        "score": np.asarray(score, dtype=float),
        "event": frame["event_id"].to_numpy() if "event_id" in frame else np.full(len(frame), ""),
    }).sort_values(["meter_id", "timestamp"], kind="stable")
    label, fl = df["label"].to_numpy(), df["flag"].to_numpy()
    tp = int((label & fl).sum())
    p = tp / fl.sum() if fl.sum() else 0.0
    r = tp / label.sum() if label.sum() else 0.0
    pr_auc = float(average_precision_score(label, df["score"].to_numpy())) if label.any() else float("nan")

    detected = events = true_eps = episodes = 0
    delays: list[float] = []
    for _meter, g in df.groupby("meter_id", sort=False):
        lab, flg = g["label"].to_numpy(), g["flag"].to_numpy()
        ts = g["timestamp"].to_numpy()
        ev = g["event"].to_numpy()
        event_runs = _runs(lab, 0)
        # split runs that cover two labelled events back to back
        if ev.dtype == object and (ev != "").any():
            split = []
            for s, e in event_runs:
                cut = [s] + [i for i in range(s + 1, e + 1) if ev[i] != ev[i - 1]] + [e + 1]
                split += [(a, b - 1) for a, b in zip(cut[:-1], cut[1:])]
            event_runs = split
        events += len(event_runs)
        for s, e in event_runs:
            hit = np.flatnonzero(flg[s:e + 1])
            if len(hit):
                detected += 1
                delays.append((ts[s + hit[0]] - ts[s]) / np.timedelta64(1, "h"))
        covered = np.zeros(len(lab), dtype=bool)
        for s, e in event_runs:
            covered[s:min(len(lab), e + 1 + RECOVERY_GRACE)] = True
        for s, e in _runs(flg, MERGE_GAP):
            episodes += 1
            true_eps += bool(covered[s:e + 1].any())
    ep = true_eps / episodes if episodes else 0.0
    er = detected / events if events else 0.0
    return QualityReport(
        detector=detector, point_precision=p, point_recall=r, point_f1=_f1(p, r), pr_auc=pr_auc,
        event_precision=ep, event_recall=er, event_f1=_f1(ep, er),
        false_alarms_per_1000=1000.0 * (episodes - true_eps) / len(df),
        median_delay_hours=float(np.median(delays)) if delays else float("nan"),
        events=events, alarm_episodes=episodes, readings=len(df),
    )


def evaluate_groups(frame: pd.DataFrame, flag: np.ndarray, score: np.ndarray, detector: str,
                    column: str = "archetype") -> list[QualityReport]:
    """A report per value of ``column`` (e.g. per meter archetype), on that group's readings only."""
    reports = []
    values = frame[column].astype(str).to_numpy()
    for group in sorted(set(values)):
        rows = values == group
        report = evaluate_flags(frame[rows], np.asarray(flag)[rows], np.asarray(score)[rows], detector)
        report.group = group
        reports.append(report)
    return reports


def rolling_zscore_baseline(frame: pd.DataFrame, window: int = 24, threshold: float = 3.5) -> tuple[np.ndarray, np.ndarray]:
    """Trailing rolling z-score per meter (window readings, excluding the current one)."""
    df = frame[["meter_id", "timestamp", "kwh"]].copy()
    df["_pos"] = np.arange(len(df))
    df = df.sort_values(["meter_id", "timestamp"], kind="stable")
    grouped = df.groupby("meter_id", sort=False)["kwh"]
    mean = grouped.transform(lambda s: s.shift(1).rolling(window, min_periods=window // 2).mean())
    std = grouped.transform(lambda s: s.shift(1).rolling(window, min_periods=window // 2).std())
    z = ((df["kwh"] - mean) / (std + 1e-9)).abs().fillna(0.0)
    out = np.empty(len(df))
    out[df["_pos"].to_numpy()] = z.to_numpy()
    return out > threshold, out


def raw_isolation_forest_baseline(frame: pd.DataFrame, contamination: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """The original prototype: Isolation Forest on the raw kWh value alone."""
    from sklearn.ensemble import IsolationForest

    X = frame[["kwh"]].to_numpy(dtype=float)
    forest = IsolationForest(contamination=contamination, random_state=0, n_jobs=1).fit(X)
    return forest.predict(X) == -1, -forest.score_samples(X)


def feature_detector_flags(frame: pd.DataFrame, name: str, contamination: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """LOF or One-Class SVM on the WattsUp features, fitted on the same data (unsupervised)."""
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.preprocessing import RobustScaler
    from sklearn.svm import OneClassSVM

    extractor = FeatureExtractor()
    readings = TimeOrderedReadings(frame)
    # The comparison detectors see the features without peer correction, as they always have.
    matrix = np.vstack([extractor.transform(batch, correct_peers=False).matrix for _, batch in readings.batches()])
    # the file has no forecasts: the forecast residual column is empty
    X = RobustScaler().fit_transform(np.delete(matrix, FEATURE_INDEX["forecast_residual"], axis=1))
    fit_rows = np.random.default_rng(0).choice(len(X), min(len(X), 20_000), replace=False)
    if name == "lof":
        model = LocalOutlierFactor(n_neighbors=35, novelty=True, contamination=contamination).fit(X[fit_rows])
    elif name == "ocsvm":
        model = OneClassSVM(nu=contamination, gamma="scale").fit(X[fit_rows[:5000]])
    else:
        raise ValueError(f"unknown detector {name!r}: use iforest, lof or ocsvm")
    score = -model.score_samples(X)
    flag = model.predict(X) == -1
    return readings.in_frame_order(flag), readings.in_frame_order(score)
