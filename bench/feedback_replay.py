"""A scripted operator on the simulator: does marking false alarms on day 1 quieten day 2, at what cost?

Two runs of the stream worker's scorer (``StreamScorer``: the engine, incidents and operator feedback
exactly as ``wattsup stream`` runs them, without a broker) over the same simulated fleet, in the same
micro-batches of head-end messages:

* **without feedback**;
* **with feedback**: at the end of day 1 the operator looks at every incident opened during day 1
  and, using the simulator's labels as the truth a site visit would give, marks each false alarm
  (no labelled reading of its meter from its start to its last anomaly, two readings of grace either
  side, as ``wattsup evaluate`` counts alarms) ``false_alarm`` with the default scope
  (:data:`detection.feedback.DEFAULT_SCOPE_DAYS`) and each true one ``confirmed``.

Printed for day 2, both runs: false-alarm incidents and false-alarm anomalies on the marked meters,
and the event recall (and precision) of the whole fleet, as ``wattsup evaluate`` computes them from
the anomalies that stand (suppressed ones are misses).

    .venv/bin/python bench/feedback_replay.py [--meters 200] [--interval-minutes 15] [--warmup-days 7]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from detection.evaluation import evaluate_flags
from detection.feedback import mark_for_incident
from foundation.timeutil import epoch_ms
from models.training import train_and_save
from readings.columns import ReadingColumns, decode_into
from schemas.reading_encoder import feeder_batches
from schemas.serde import METER_READING_BATCH, SingleObjectSerde
from simulation.archetypes import MIXED_FLEET
from simulation.fleet import FleetConfig, simulate_fleet
from stream_processors.scoring import StreamScorer

log = logging.getLogger("feedback_replay")
DAY_MS = 86_400_000
GRACE_READINGS = 2


@dataclass
class Run:
    anomalies: list[dict] = field(default_factory=list)
    incidents: dict[str, dict] = field(default_factory=dict)
    """Latest record of each incident."""
    marked: dict[str, set[str]] = field(default_factory=dict)
    """meter id -> kinds of its day-1 false alarms, marked (only with feedback)."""


def is_false_alarm(incident: dict, labelled: dict[str, np.ndarray]) -> bool:
    stamps = labelled.get(incident["meter_id"])
    if stamps is None:
        return True
    grace = GRACE_READINGS * incident["interval_seconds"] * 1000
    return not ((stamps >= incident["started"] - grace) & (stamps <= incident["last_seen"] + grace)).any()


def replay(model_dir: Path, messages: list[bytes], serde, day1_end: int, labelled: dict[str, np.ndarray],
           feedback: bool, batch: int = 50) -> Run:
    scorer = StreamScorer(model_dir, serde)
    scorer.attach_tables({}, {})
    run = Run()
    marked_at_end_of_day1 = False
    for s in range(0, len(messages), batch):
        columns = ReadingColumns()
        for m in messages[s:s + batch]:
            decode_into(columns, serde, m, "replay")
        if feedback and not marked_at_end_of_day1 and max(columns.timestamps_ms) >= day1_end:
            marked_at_end_of_day1 = True
            now = int(time.time() * 1000)
            for inc in run.incidents.values():
                if not day1_end - DAY_MS <= inc["started"] < day1_end:
                    continue
                verdict = "false_alarm" if is_false_alarm(inc, labelled) else "confirmed"
                made = mark_for_incident(inc, verdict, created_at=now)
                scorer.incidents.on_mark(made.key, made)
                if verdict == "false_alarm":
                    run.marked.setdefault(inc["meter_id"], set()).add(inc["kind"])
        result = scorer.process(columns)
        scorer.persist(result.touched_feeders)
        run.anomalies += result.anomalies
        for r in result.incidents:
            run.incidents[r["incident_id"]] = r
    return run


def day2_figures(run: Run, readings: pd.DataFrame, day1_end: int, labelled: dict[str, np.ndarray],
                 marked: dict[str, set[str]]) -> dict[str, float]:
    day2 = lambda t: day1_end <= t < day1_end + DAY_MS  # noqa: E731
    standing = [a for a in run.anomalies if not a.get("suppressed_by")]
    fa_incidents = [i for i in run.incidents.values() if day2(i["started"]) and i["meter_id"] in marked
                    and is_false_alarm(i, labelled)]
    ts = epoch_ms(readings["timestamp"])
    frame = readings.loc[(ts >= day1_end) & (ts < day1_end + DAY_MS)].reset_index(drop=True)
    keys = {(a["meter_id"], int(a["timestamp"])) for a in standing}
    frame_ts = epoch_ms(frame["timestamp"])
    flag = np.fromiter(((m, t) in keys for m, t in zip(frame["meter_id"], frame_ts.tolist())), dtype=bool, count=len(frame))
    point_label = frame["label"].to_numpy().astype(bool)
    on_marked = frame["meter_id"].isin(list(marked)).to_numpy()
    report = evaluate_flags(frame, flag, flag.astype(float), "replay")
    return {
        "false_alarm_incidents_on_marked_meters": len(fa_incidents),
        "  of which of a marked kind": sum(1 for i in fa_incidents if i["kind"] in marked[i["meter_id"]]),
        "false_alarm_anomalies_on_marked_meters": int((flag & ~point_label & on_marked).sum()),
        "suppressed_anomalies": sum(1 for a in run.anomalies if a.get("suppressed_by") and day2(a["timestamp"])),
        "event_recall": report.event_recall, "event_precision": report.event_precision, "events": report.events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--interval-minutes", type=int, default=15)
    parser.add_argument("--warmup-days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=202)
    parser.add_argument("--archetypes", choices=("original", "mixed"), default="mixed",
                        help="mixed: every real-meter archetype (EV chargers, pumps, prosumers, ...), the fleet whose "
                             "habits a detector misreads most; original: households and institutions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    model_dir = Path(tempfile.mkdtemp(prefix="feedback-replay-"))
    history = simulate_fleet(FleetConfig(meters=150, days=10, interval=timedelta(hours=1), seed=1001)).readings
    train_and_save(history, model_dir, n_estimators=100, source="feedback replay")
    fleet = simulate_fleet(FleetConfig(meters=args.meters, days=args.warmup_days + 2,
                                       interval=timedelta(minutes=args.interval_minutes), seed=args.seed,
                                       archetypes=MIXED_FLEET if args.archetypes == "mixed" else None))
    readings = fleet.readings
    serde = SingleObjectSerde()
    messages = [serde.encode(METER_READING_BATCH, b) for b in feeder_batches(readings)]
    day0 = int(epoch_ms(readings["timestamp"]).min()) // DAY_MS * DAY_MS
    day1_end = day0 + (args.warmup_days + 1) * DAY_MS
    ts = epoch_ms(readings["timestamp"])
    positive = readings["label"].to_numpy().astype(bool)
    labelled = {m: np.sort(ts[positive & (readings["meter_id"].to_numpy() == m)])
                for m in readings.loc[positive, "meter_id"].unique()}

    without = replay(model_dir, messages, serde, day1_end, labelled, feedback=False)
    with_feedback = replay(model_dir, messages, serde, day1_end, labelled, feedback=True)
    marked = with_feedback.marked
    a = day2_figures(without, readings, day1_end, labelled, marked)
    b = day2_figures(with_feedback, readings, day1_end, labelled, marked)
    day1_incidents = sum(1 for i in with_feedback.incidents.values() if day1_end - DAY_MS <= i["started"] < day1_end)
    print(f"fleet: {args.meters} meters ({args.archetypes}), {args.interval_minutes}-minute readings, {args.warmup_days} days of warm-up, "
          f"seed {args.seed}; {len(readings)} readings in {len(messages)} head-end messages")
    print(f"day 1: {day1_incidents} incidents opened; the operator marked false alarms on {len(marked)} meters")
    print(f"{'day 2':44} {'without feedback':>18} {'with feedback':>15}")
    for key in a:
        fmt = (lambda v: f"{v:.3f}") if isinstance(a[key], float) else str
        print(f"{key:44} {fmt(a[key]):>18} {fmt(b[key]):>15}")
    fa_a, fa_b = a["false_alarm_incidents_on_marked_meters"], b["false_alarm_incidents_on_marked_meters"]
    print(f"false-alarm incidents on marked meters fall by {1 - fa_b / fa_a:.0%}" if fa_a else
          "no false-alarm incident on the marked meters on day 2 without feedback")
    print(f"event recall changes by {100 * (b['event_recall'] - a['event_recall']):+.1f} points; "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
