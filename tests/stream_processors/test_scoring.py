"""The worker's state survives a trip through the changelog tables exactly."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models.training import train_and_save
from readings.columns import ReadingColumns, decode_into
from schemas.serde import FORECAST
from simulation.fleet import FleetConfig, simulate_fleet
from stream_processors.scoring import StreamScorer
from tests.stream_processors.scoring_fleet import (
    WorkerTable,
    fresh_tables,
    model_and_messages,
    run_in_batches,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return model_and_messages(tmp_path_factory.mktemp("models"))


def run(engine: StreamScorer, serde, messages, batch: int = 40) -> list[dict]:
    return run_in_batches(engine, serde, messages, batch)[0]


def strip_times(anomalies: list[dict]) -> list[dict]:
    return [{k: v for k, v in a.items() if k != "detected_at"} for a in anomalies]


def test_a_worker_restored_from_the_tables_continues_identically(setup):
    model_dir, serde, messages = setup
    cut = len(messages) * 2 // 3

    uninterrupted = StreamScorer(model_dir, serde)
    uninterrupted.attach_tables(*fresh_tables())
    run(uninterrupted, serde, messages[:cut])
    expected = run(uninterrupted, serde, messages[cut:])

    first = StreamScorer(model_dir, serde)
    state, forecasts = {}, {}
    first.attach_tables(WorkerTable(state), WorkerTable(forecasts))
    run(first, serde, messages[:cut])
    restored = StreamScorer(model_dir, serde)  # a new process: nothing in memory, only the changelog
    restored.attach_tables(WorkerTable(dict(state), recover=True), WorkerTable(dict(forecasts), recover=True))
    got = run(restored, serde, messages[cut:])

    assert expected, "the second part should contain anomalies"
    assert strip_times(got) == strip_times(expected)
    assert restored.meters_tracked == 120
    assert {k.split(b"|")[0] for k in state} == {b"F0001", b"F0002", b"F0003"}


def test_redelivered_messages_are_duplicates_after_restore(setup):
    model_dir, serde, messages = setup
    first = StreamScorer(model_dir, serde)
    state = {}
    first.attach_tables(WorkerTable(state), WorkerTable({}))
    run(first, serde, messages)
    restored = StreamScorer(model_dir, serde)
    restored.attach_tables(WorkerTable(dict(state), recover=True), WorkerTable({}))
    columns = ReadingColumns()
    for m in messages[-30:]:
        decode_into(columns, serde, m, "again")
    result = restored.process(columns)
    assert result.duplicates == len(columns) and result.scored == 0 and result.anomalies == []


def test_a_feeder_of_a_lost_partition_is_forgotten_and_continues_identically_when_it_comes_back(setup):
    model_dir, serde, messages = setup
    cut = len(messages) // 2
    uninterrupted = StreamScorer(model_dir, serde)
    uninterrupted.attach_tables(*fresh_tables())
    run(uninterrupted, serde, messages[:cut])
    expected = run(uninterrupted, serde, messages[cut:])

    state, forecasts = {}, {}
    worker = StreamScorer(model_dir, serde)
    worker.attach_tables(WorkerTable(state), WorkerTable(forecasts))
    run(worker, serde, messages[:cut])
    assert worker.keep_only(lambda feeder: feeder != "F0002") == ["F0002"]  # its partition went elsewhere
    assert worker.meters_tracked == 80 and worker.feeders_tracked == 2
    assert worker.keep_only(lambda feeder: feeder != "F0002") == []
    # the partition comes back: recovery puts the feeder's records from the changelog in the table
    worker.feeders.table.local.update({k: v for k, v in state.items() if k.startswith(b"F0002|")})
    assert strip_times(run(worker, serde, messages[cut:])) == strip_times(expected)
    assert worker.meters_tracked == 120


def test_forecasts_join_readings_and_survive_restore(setup):
    model_dir, serde, messages = setup
    engine = StreamScorer(model_dir, serde)
    state, forecasts = {}, {}
    engine.attach_tables(WorkerTable(state), WorkerTable(forecasts))
    run(engine, serde, messages)
    columns = ReadingColumns()
    decode_into(columns, serde, messages[-1], "probe")
    meter, feeder = columns.meter_ids[0], columns.feeder_ids[0]
    last_ts = columns.timestamps_ms[0] + 30 * 86_400_000  # well after anything the meter has sent
    horizon = [{"timestamp": last_ts + 3_600_000 * (i + 1), "expected": 1.0, "lower": 0.8, "upper": 1.2}
               for i in range(24)]
    forecast = serde.encode(FORECAST, {"meter_id": meter, "feeder_id": feeder, "generated_at": last_ts,
                                       "model_version": "test", "interval_seconds": 3600, "horizon": horizon})
    engine.accept_forecasts([forecast])
    restored = StreamScorer(model_dir, serde)
    restored.attach_tables(WorkerTable(dict(state), recover=True), WorkerTable(dict(forecasts), recover=True))
    batch = ReadingColumns()
    batch.add({"meter_id": meter, "feeder_id": feeder, "timestamp": last_ts + 3_600_000, "energy_kwh": 9.0,
               "interval_seconds": 3600})
    result = restored.process(batch)
    assert restored.forecasts_tracked == 1
    assert len(result.anomalies) == 1
    a = result.anomalies[0]
    assert (a["expected"], a["lower"], a["upper"]) == (1.0, 0.8, 1.2)
    assert a["residual"] == pytest.approx(8.0)
    assert a["band_residual"] == pytest.approx(8.0 / 0.2)
    assert a["baseline"] > 0 and a["baseline"] != a["expected"]
    # this model was trained without forecasts: the forecast residual is no part of its score
    assert not any(c["feature"] == "forecast_residual" for c in a["causes"])


def test_a_newer_model_is_swapped_in_between_batches_and_counted(setup, tmp_path):
    """The reloader's rules (newest wins, other features refused) are tested in tests/models/test_reload.py."""
    import shutil

    from prometheus_client import REGISTRY

    def reloads() -> float:
        return REGISTRY.get_sample_value("wattsup_stream_model_reloads_total")

    model_dir, serde, messages = setup
    local = tmp_path / "models"
    shutil.copytree(model_dir, local)
    scorer = StreamScorer(local, serde)
    scorer.attach_tables(*fresh_tables())
    before, reloads_before = scorer.model_version, reloads()
    assert scorer.maybe_reload_model() is False  # nothing newer
    run(scorer, serde, messages[:40])
    history = simulate_fleet(FleetConfig(meters=30, days=6, interval=timedelta(hours=1), seed=9)).readings
    newer = train_and_save(history, local, n_estimators=10)
    assert scorer.maybe_reload_model() is True
    assert scorer.model_version == newer.version != before
    assert reloads() == reloads_before + 1
    later = run(scorer, serde, messages[40:])
    assert {a["model_version"] for a in later} <= {newer.version, "baseline-rules"}


def test_without_any_model_every_meter_is_scored_by_rules(tmp_path, setup):
    _, serde, messages = setup
    engine = StreamScorer(tmp_path / "empty", serde)
    engine.attach_tables(*fresh_tables())
    anomalies = run(engine, serde, messages)
    assert engine.model_version == "baseline-rules"
    assert anomalies and {a["model_version"] for a in anomalies} == {"baseline-rules"}


def test_a_successor_does_not_repeat_anomalies_emitted_before_the_state_was_saved(setup):
    """The crash window: anomalies on the topic, the state marking their readings not yet saved."""
    model_dir, serde, messages = setup
    cut = len(messages) // 2
    first = StreamScorer(model_dir, serde)
    state = {}
    first.attach_tables(WorkerTable(state), WorkerTable({}))
    run(first, serde, messages[:cut])
    saved = dict(state)  # the last state that reached the changelog
    emitted_after_save = run(first, serde, messages[cut:])  # processed, anomalies out, then the crash
    assert emitted_after_save
    on_topic = {(a["meter_id"], a["timestamp"]) for a in emitted_after_save}
    asked: list[tuple[str, int]] = []

    def emitted_since(feeder: str, since_ms: int) -> set[tuple[str, int]]:
        asked.append((feeder, since_ms))
        return {(m, t) for m, t in on_topic if m in first.feeders.members[feeder]}

    successor = StreamScorer(model_dir, serde, emitted_since=emitted_since)
    successor.attach_tables(WorkerTable(dict(saved), recover=True), WorkerTable({}))
    again = run(successor, serde, messages[cut:])  # the same readings, delivered again
    assert again == []
    assert asked and all(since > 0 for _, since in asked)

    # Without the read-back, the same replay would have repeated every one of them.
    forgetful = StreamScorer(model_dir, serde)
    forgetful.attach_tables(WorkerTable(dict(saved), recover=True), WorkerTable({}))
    assert {(a["meter_id"], a["timestamp"]) for a in run(forgetful, serde, messages[cut:])} == on_topic


def test_a_model_of_an_earlier_detector_format_leaves_the_worker_on_the_rules(setup, tmp_path, caplog):
    import json
    import shutil

    model_dir, serde, _ = setup
    old = tmp_path / "models"
    shutil.copytree(model_dir, old)
    (meta_path,) = old.glob("*/metadata.json")
    meta = json.loads(meta_path.read_text())
    del meta["detector_format"]  # as saved before format 2
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level("ERROR"):
        engine = StreamScorer(old, serde)
    assert engine.model_version == "baseline-rules"
    assert "retrain it with `wattsup model train`" in caplog.text


def test_late_and_stale_readings_are_counted_with_an_example(setup):
    """A meter whose state is ahead of its readings (a wrong clock once, or the demo restarted on
    old state) must show in the worker's numbers, not fall silent."""
    model_dir, serde, messages = setup
    scorer = StreamScorer(model_dir, serde)
    scorer.attach_tables(*fresh_tables())
    run(scorer, serde, messages)
    columns = ReadingColumns()
    decode_into(columns, serde, messages[-1], "last")
    meter, newest = columns.meter_ids[0], columns.timestamps_ms[0]
    hour = 3_600_000
    late, stale = ReadingColumns(), ReadingColumns()
    # half an hour off the hourly grid: never seen, older than the newest -> late (scored)
    late.add({"meter_id": meter, "feeder_id": columns.feeder_ids[0], "timestamp": newest - 2 * hour - hour // 2,
              "energy_kwh": 0.4, "interval_seconds": 3600})
    result = scorer.process(late)
    assert (result.late, result.stale, result.scored) == (1, 0, 1)
    assert result.late_example == (meter, newest - 2 * hour - hour // 2)
    # older than every timestamp the meter remembers -> stale (not scored)
    stale.add({"meter_id": meter, "feeder_id": columns.feeder_ids[0], "timestamp": newest - 100 * hour - hour // 2,
               "energy_kwh": 0.4, "interval_seconds": 3600})
    result = scorer.process(stale)
    assert (result.late, result.stale, result.scored) == (0, 1, 0)
    assert result.stale_example == (meter, newest - 100 * hour - hour // 2)
    columns = ReadingColumns()
    decode_into(columns, serde, messages[-1], "again")
    result = scorer.process(columns)
    assert (result.late, result.stale, result.late_example, result.stale_example) == (0, 0, None, None)
