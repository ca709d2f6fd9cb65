"""A stream worker's memory per meter: the decoded state, and what the feeder table holds beside it.

Runs a fleet through the stream scorer (decode, score, persist per micro-batch, as the worker does)
twice in one process, and measures with ``tracemalloc`` what each run keeps once it is done:

* **state kept once** (the worker today): the table's writes go to the changelog only, and its store
  holds nothing once the feeders are loaded (``stream_processors/changelog_batch.py``);
* **baseline, table keeps a copy** (Faust's in-memory table before): every record written stays in
  the table, the newest per key.

The decoded state arrays are allocated up front at a capacity above the fleet, so both figures are
what a meter costs beyond them; the arrays' own bytes per meter are printed from their shapes. A week
of hourly readings gives every baseline slot its record, as a fleet running for a week has.

    .venv/bin/python bench/state_memory.py [--meters 10000] [--days 7] [--meters-per-feeder 200]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path

from detection.meter_state import ARRAY_NAMES, MeterStateStore
from models.training import train_and_save
from readings.columns import ReadingColumns, decode_into
from schemas.reading_encoder import feeder_batches
from schemas.serde import METER_READING_BATCH, SingleObjectSerde
from simulation.fleet import FleetConfig, simulate_fleet
from stream_processors.scoring import StreamScorer

BATCH_MESSAGES = 250
"""Messages per micro-batch, about what the worker takes at a time from a backlog of head-end messages."""


class ChangelogOnly:
    """The worker's table: writes go to the changelog (dropped here), nothing is recovered."""

    def __setitem__(self, key: bytes, value: bytes) -> None:
        pass

    def pop(self, key: bytes, default: bytes | None = None) -> bytes | None:
        return default

    get = pop


class KeepsACopy(dict):
    """Faust's in-memory table as the worker used it before: every write kept (never re-read)."""

    def pop(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        return default


def kept_per_meter(model_dir: Path, serde: SingleObjectSerde, messages: list[bytes], table: object,
                   meters: int) -> float:
    """Bytes per meter a scorer holds after streaming ``messages``, beyond its preallocated arrays."""
    gc.collect()
    tracemalloc.start()
    scorer = StreamScorer(model_dir, serde)
    scorer.engine.extractor.store = store = MeterStateStore(capacity=meters + 1)  # no growth while measured
    scorer.feeders.store = store
    scorer.attach_tables(table, ChangelogOnly())
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(0, len(messages), BATCH_MESSAGES):
        columns = ReadingColumns()
        for m in messages[start:start + BATCH_MESSAGES]:
            decode_into(columns, serde, m, "bench")
        result = scorer.process(columns)
        scorer.persist(result.touched_feeders)
    del columns, result
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert scorer.meters_tracked == meters, scorer.meters_tracked
    return kept / meters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--meters-per-feeder", type=int, default=200)
    args = parser.parse_args()

    model_dir = Path(tempfile.mkdtemp(prefix="wattsup-state-memory-"))
    history = simulate_fleet(FleetConfig(meters=500, days=14, interval=timedelta(hours=1), seed=8)).readings
    train_and_save(history, model_dir, source="bench history")
    fleet = simulate_fleet(FleetConfig(meters=args.meters, days=args.days, interval=timedelta(hours=1), seed=7,
                                       missing_rate=0.0, late_rate=0.0,
                                       meters_per_feeder=args.meters_per_feeder)).readings
    serde = SingleObjectSerde()
    messages = [serde.encode(METER_READING_BATCH, b) for b in feeder_batches(fleet)]
    del fleet, history

    probe = MeterStateStore(capacity=1)
    arrays = sum(getattr(probe, name).nbytes for name in ARRAY_NAMES)
    once = kept_per_meter(model_dir, serde, messages, ChangelogOnly(), args.meters)
    copy = kept_per_meter(model_dir, serde, messages, KeepsACopy(), args.meters)
    print(f"{args.meters:,} meters, {args.meters_per_feeder} per feeder, {args.days} days of hourly readings")
    print(f"{'decoded state arrays, per meter (from their shapes)':<58}{arrays / 1024:>10.2f} KB")
    print(f"{'beyond them, state kept once (the worker)':<58}{once / 1024:>10.2f} KB")
    print(f"{'beyond them, baseline: the table keeps a copy':<58}{copy / 1024:>10.2f} KB")
    print(f"{'per meter in all, kept once / baseline':<58}{(arrays + once) / 1024:>10.2f} / "
          f"{(arrays + copy) / 1024:.2f} KB   (goal: 3 KB)")


if __name__ == "__main__":
    main()
