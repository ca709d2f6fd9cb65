"""Detection quality per meter archetype, on simulated mixed fleets whose seeds chose no constant.

Trains the detector on one mixed fleet (seed 1001, the training seed), then runs ``wattsup
detect``'s engine over fresh fleets (default seeds 41, 42, 43: never looked at while tuning; 21-23
and 31-33 were) and prints, per archetype and overall, event precision and recall, point precision
and recall and false alarms per 1,000 normal readings, with a trailing rolling z-score detector on
the same readings as the baseline of the same run, and the spread over the seeds.

    .venv/bin/python bench/detection_quality.py [--seeds 41 42 43] [--meters 400] [--days 28]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from detection.evaluation import QualityReport, evaluate_flags, evaluate_groups, rolling_zscore_baseline
from detection.offline import detect_frame
from detection.training import fit_detector
from simulation.archetypes import MIXED_FLEET
from simulation.fleet import FleetConfig, simulate_fleet

TRAINING_SEED = 1001
START = datetime(2026, 3, 20, tzinfo=UTC)
"""Spring: heating gas and irrigation change season within the four weeks."""


def mixed_fleet(seed: int, meters: int, days: int) -> pd.DataFrame:
    return simulate_fleet(FleetConfig(meters=meters, days=days, interval=timedelta(hours=1), seed=seed,
                                      archetypes=MIXED_FLEET, meters_per_feeder=20, start=START)).readings


def reports(frame: pd.DataFrame, flag: np.ndarray, score: np.ndarray, name: str) -> list[QualityReport]:
    overall = evaluate_flags(frame, flag, score, name)
    overall.group = "all"
    return [overall, *evaluate_groups(frame, flag, score, name)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[41, 42, 43])
    parser.add_argument("--meters", type=int, default=400)
    parser.add_argument("--days", type=int, default=28)
    args = parser.parse_args()

    started = time.monotonic()
    model = fit_detector(mixed_fleet(TRAINING_SEED, args.meters, args.days), source=f"mixed fleet seed {TRAINING_SEED}")
    print(f"trained on seed {TRAINING_SEED} ({args.meters} meters x {args.days} d) in {time.monotonic() - started:.0f} s")
    rows = []
    for seed in args.seeds:
        frame = mixed_fleet(seed, args.meters, args.days)
        started = time.monotonic()
        result = detect_frame(frame, model)
        elapsed = time.monotonic() - started
        print(f"seed {seed}: {len(frame)} readings scored in {elapsed:.1f} s ({len(frame) / elapsed:,.0f} readings/s)")
        for name, (flag, score) in (("wattsup", (result.scores["flag"].to_numpy(), result.scores["score"].to_numpy())),
                                    ("rolling z-score", rolling_zscore_baseline(frame))):
            for r in reports(frame, flag, score, name):
                rows.append({"seed": seed, "detector": name, "archetype": r.group, "event P": r.event_precision,
                             "event R": r.event_recall, "point P": r.point_precision, "point R": r.point_recall,
                             "FA/1k": r.false_alarms_per_1000, "events": r.events})
    table = pd.DataFrame(rows)
    metrics = ["event P", "event R", "point P", "point R", "FA/1k"]
    summary = table.groupby(["detector", "archetype"], sort=False)[metrics].agg(["mean", "min", "max"])
    pd.set_option("display.width", 220)
    pd.set_option("display.max_columns", 40)
    for detector in ("wattsup", "rolling z-score"):
        print(f"\n{detector}: mean (min-max over seeds {', '.join(map(str, args.seeds))})")
        part = summary.loc[detector]
        lines = ["| archetype | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for archetype, row in part.iterrows():
            cells = [f"{row[(m, 'mean')]:.2f} ({row[(m, 'min')]:.2f}-{row[(m, 'max')]:.2f})" for m in metrics]
            lines.append(f"| {archetype} | " + " | ".join(cells) + " |")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
