"""How well WattsUp's cheap attributions agree with SHAP on the same Isolation Forest.

For the readings the detector flags on a simulated fleet, it compares the robust-deviation
contributions of ``detection/explain.py`` with SHAP values from ``shap.TreeExplainer``
on the fitted forest (SHAP for an Isolation Forest explains the expected path length; a shorter
path means more abnormal, so the most negative SHAP value is the strongest cause). Prints top-1
agreement, top-3 overlap and the cost per explained row of both, in one run.

    .venv/bin/python bench/explain_agreement.py [--meters 200] [--days 14]
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

import numpy as np

from detection.engine import DetectionEngine
from detection.explain import TIME_FEATURES, contributions
from detection.features import FEATURE_NAMES
from detection.readings import ReadingBatch
from detection.training import fit_detector
from foundation.timeutil import epoch_ms
from simulation.fleet import FleetConfig, simulate_fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--max-rows", type=int, default=400)
    args = parser.parse_args()

    import shap

    train = simulate_fleet(FleetConfig(meters=150, days=10, interval=timedelta(hours=1), seed=1001)).readings
    model = fit_detector(train)
    test = simulate_fleet(FleetConfig(meters=args.meters, days=args.days, interval=timedelta(hours=1), seed=202))
    frame = test.readings.sort_values("timestamp", kind="stable")
    engine = DetectionEngine(model)
    res = engine.score(ReadingBatch(frame["meter_id"].tolist(), frame["feeder_id"].tolist(),
                                    epoch_ms(frame["timestamp"]), frame["kwh"].to_numpy(),
                                    frame["interval_seconds"].to_numpy()), build_anomalies=False)
    rows = np.flatnonzero(res.flag & (res.model_version != "baseline-rules"))[: args.max_rows]
    X = res.features.matrix[rows]
    det = model.detector

    started = time.perf_counter()
    ours = contributions(X, det.feature_center_, det.feature_scale_)
    ours_seconds = time.perf_counter() - started

    # No forecasts here: the forest that scored these rows is the one over the other features.
    base = det.base_features_
    ours = ours[:, base]
    explainer = shap.TreeExplainer(det.forest_)
    started = time.perf_counter()
    shap_values = explainer.shap_values(X[:, base])
    shap_seconds = time.perf_counter() - started
    strength = -shap_values  # negative SHAP = shorter path = more abnormal

    # Time features are down-weighted in WattsUp's explanations; compare on the others too.
    causal = np.array([FEATURE_NAMES[i] not in TIME_FEATURES for i in base])
    top1 = np.mean(ours.argmax(axis=1) == strength.argmax(axis=1))
    top1_causal = np.mean(ours[:, causal].argmax(axis=1) == strength[:, causal].argmax(axis=1))
    top3 = np.mean([len(set(np.argsort(-o)[:3]) & set(np.argsort(-s)[:3])) / 3 for o, s in zip(ours, strength)])
    print(f"flagged rows explained                      {len(rows)}")
    print(f"top-1 agreement with SHAP (all features)    {top1:.2f}")
    print(f"top-1 agreement with SHAP (non-time)        {top1_causal:.2f}")
    print(f"top-3 overlap with SHAP                     {top3:.2f}")
    print(f"cost per row: WattsUp {ours_seconds / len(rows) * 1e6:,.1f} us, SHAP {shap_seconds / len(rows) * 1e6:,.0f} us"
          f"  (SHAP / WattsUp = {shap_seconds / max(ours_seconds, 1e-9):,.0f}x)")


if __name__ == "__main__":
    main()
