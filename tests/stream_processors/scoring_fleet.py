"""A trained model and one simulated fleet as head-end messages, and how the worker runs them, for the stream
scorer's tests."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from models.training import train_and_save
from readings.columns import ReadingColumns, decode_into
from schemas.reading_encoder import feeder_batches
from schemas.serde import METER_READING_BATCH, SingleObjectSerde
from simulation.fleet import FleetConfig, simulate_fleet


class WorkerTable:
    """A worker's view of a changelog-backed table, as :class:`~stream_processors.changelog_batch.BatchedTable`
    gives it: writes go to ``changelog`` (a dict of the newest record per key), and the table holds only what
    recovery put in it (with ``recover``, everything in ``changelog`` then), until the worker takes it."""

    def __init__(self, changelog: dict[bytes, bytes], *, recover: bool = False) -> None:
        self.changelog = changelog
        self.local = dict(changelog) if recover else {}

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.changelog[key] = value

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        return self.local.get(key, default)

    def pop(self, key: bytes, default: bytes | None = None) -> bytes | None:
        return self.local.pop(key, default)


def fresh_tables() -> tuple[WorkerTable, WorkerTable]:
    """A new worker's state and forecast tables over empty changelogs."""
    return WorkerTable({}), WorkerTable({})


def model_and_messages(model_dir: Path) -> tuple[Path, SingleObjectSerde, list[bytes]]:
    """A model (60 meters x 10 days, seed 5) saved in ``model_dir``, and 120 other meters' 6 days
    (seed 6, 40 per feeder) encoded as head-end batches."""
    history = simulate_fleet(FleetConfig(meters=60, days=10, interval=timedelta(hours=1), seed=5)).readings
    train_and_save(history, model_dir, n_estimators=30)
    fleet = simulate_fleet(FleetConfig(meters=120, days=6, interval=timedelta(hours=1), seed=6, meters_per_feeder=40))
    serde = SingleObjectSerde()
    return model_dir, serde, [serde.encode(METER_READING_BATCH, b) for b in feeder_batches(fleet.readings)]


def run_in_batches(scorer, serde: SingleObjectSerde, messages: list[bytes],
                   batch: int = 40) -> tuple[list[dict], list[dict]]:
    """(anomalies, incident records) of the messages through ``scorer`` (a ``StreamScorer``) in micro-batches
    of ``batch`` messages, its state persisted after each, as the worker runs them."""
    anomalies, incidents = [], []
    for s in range(0, len(messages), batch):
        columns = ReadingColumns()
        for m in messages[s:s + batch]:
            assert decode_into(columns, serde, m, "test") == []
        result = scorer.process(columns)
        scorer.persist(result.touched_feeders)
        anomalies += result.anomalies
        incidents += result.incidents
    return anomalies, incidents
