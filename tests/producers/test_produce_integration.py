"""Producers against the real broker: what goes in comes back out, exactly, in the right partition."""

from __future__ import annotations

import io
import os
import time
from datetime import timedelta

import pandas as pd
import pytest
from confluent_kafka import Consumer
from typer.testing import CliRunner

from readings.csv_parser import parse_readings_csv
from readings.producer import ReadingProducer
from schemas.partitioning import partition_for
from schemas.serde import (
    DEAD_LETTER,
    METER_READING,
    METER_READING_BATCH,
    SingleObjectSerde,
)
from simulation.fleet import FleetConfig, simulate_fleet

pytestmark = pytest.mark.integration


def consume(kafka, topic: str, until, timeout: float = 60.0) -> list:
    consumer = Consumer({**kafka.connection.confluent_config(), "group.id": f"t-{os.urandom(4).hex()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages: list = []
    deadline = time.monotonic() + timeout
    while not until(messages) and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(5000, timeout=0.5) if m.error() is None]
    # A moment more: anything beyond what was expected would be a duplicate.
    messages += [m for m in consumer.consume(5000, timeout=1.0) if m.error() is None]
    consumer.close()
    return messages


def decoded_readings(messages) -> list[tuple[int, dict]]:
    """(partition, reading) for every reading, unpacking head-end batches; checks every key is the feeder."""
    serde = SingleObjectSerde()
    out = []
    for msg in messages:
        name, record = serde.decode(msg.value(), raw_timestamps=True)
        assert name in (METER_READING, METER_READING_BATCH)
        assert msg.key().decode() == record["feeder_id"]
        readings = record["readings"] if name == METER_READING_BATCH else [record]
        assert all(r["feeder_id"] == record["feeder_id"] for r in readings)
        out += [(msg.partition(), r) for r in readings]
    return out


def assert_exact_round_trip(fleet_readings: pd.DataFrame, got: list[tuple[int, dict]], partitions: int) -> None:
    sent = {(r.meter_id, int(r.timestamp.value // 1_000_000)): r for r in fleet_readings.itertuples()}
    assert len(sent) == len(fleet_readings)
    for partition, reading in got:
        original = sent.pop((reading["meter_id"], reading["timestamp"]))  # KeyError: unknown or duplicate
        assert reading["energy_kwh"] == original.kwh
        assert reading["feeder_id"] == original.feeder_id
        assert reading["interval_seconds"] == original.interval_seconds
        assert reading["quality_flags"] == ([original.quality_flags] if original.quality_flags else [])
        assert reading["voltage_v"] is None and reading["power_kw"] is None
        assert partition == partition_for(original.feeder_id, partitions)
    assert not sent  # every reading came back, none twice

    partitions_per_meter: dict[str, set[int]] = {}
    for partition, reading in got:
        partitions_per_meter.setdefault(reading["meter_id"], set()).add(partition)
    assert all(len(p) == 1 for p in partitions_per_meter.values())
    assert len({p for p, _ in got}) > 1  # the feeders really are spread over partitions


def assert_meter_order_kept(fleet_readings: pd.DataFrame, got: list[tuple[int, dict]]) -> None:
    """Within a partition, each meter's readings arrive in the order they were sent."""
    sent_order = fleet_readings.assign(ms=pd.DatetimeIndex(fleet_readings["timestamp"]).as_unit("ms").asi8)
    received = pd.DataFrame([{"meter_id": r["meter_id"], "ms": r["timestamp"]} for _, r in got])
    for meter in sent_order["meter_id"].unique()[:25]:
        assert received.loc[received["meter_id"] == meter, "ms"].tolist() == \
            sent_order.loc[sent_order["meter_id"] == meter, "ms"].tolist()


@pytest.mark.parametrize("batch_by_feeder", [False, True], ids=["single", "head-end-batches"])
def test_simulated_readings_round_trip_exactly(kafka, batch_by_feeder):
    topics = kafka.fresh_topics(partitions=4)
    fleet = simulate_fleet(FleetConfig(meters=120, days=1, interval=timedelta(minutes=15), meters_per_feeder=20,
                                       late_rate=0.02, seed=9))
    readings = fleet.readings
    assert readings["quality_flags"].eq("LATE").any()
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(readings, batch_by_feeder=batch_by_feeder, head_end_id="he-test")
    summary = producer.summary
    assert summary.sent == len(readings) and summary.failed == 0 and summary.ok
    if batch_by_feeder:  # one upload per feeder and interval, late readings riding along
        assert summary.records == 6 * 96
    else:
        assert summary.records == len(readings)

    messages = consume(kafka, topics.readings, lambda ms: len(ms) >= summary.records)
    assert len(messages) == summary.records
    got = decoded_readings(messages)
    assert len(got) == len(readings)
    assert_exact_round_trip(readings, got, partitions=4)
    assert_meter_order_kept(readings, got)
    if batch_by_feeder:
        batches = [SingleObjectSerde().decode(m.value())[1] for m in messages]
        assert {b["head_end_id"] for b in batches} == {"he-test"}
        assert len({b["batch_id"] for b in batches}) == len(batches)


def test_bad_csv_rows_go_to_dead_letters_and_valid_rows_all_arrive(kafka):
    topics = kafka.fresh_topics(partitions=2)
    text = (
        "timestamp,meter_id,kwh\n"
        "2026-01-01T00:00:00Z,M1,0.5\n"
        "2026-01-01T00:15:00Z,M1,abc\n"
        "2026-01-01T00:30:00Z,M1,0.4\n"
        "yesterday,M2,0.4\n"
        "2026-01-01T00:45:00Z,,0.3\n"
        "2026-01-01T00:45:00Z,M2,-1\n"
        "\n"
        "2026-01-01T01:00:00Z,M2,0.9,extra\n"
        "2026-01-01T01:00:00Z,M2,0.9\n"
    )
    parsed = parse_readings_csv(io.StringIO(text))
    with ReadingProducer(kafka.connection, topics) as producer:
        for row in parsed.rejected:
            producer.send_dead_letter("csv:bad.csv", row.reason, raw_text=row.raw_text, row_number=row.row_number)
        producer.send_frame(parsed.readings)
    assert producer.summary.sent == 4 and producer.summary.rejected == 4 and producer.summary.dead_lettered == 4

    serde = SingleObjectSerde()
    letters = consume(kafka, topics.dead_letters, lambda ms: len(ms) >= 4)
    assert len(letters) == 4
    decoded = [serde.decode(m.value()) for m in letters]  # one key per source: in order, in one partition
    assert [name for name, _ in decoded] == [DEAD_LETTER] * 4
    assert [(r["row_number"], r["reason"], r["raw_text"]) for _, r in decoded] == [
        (3, "non-numeric kwh 'abc'", "2026-01-01T00:15:00Z,M1,abc"),
        (5, "unparseable timestamp 'yesterday'", "yesterday,M2,0.4"),
        (6, "missing meter_id", "2026-01-01T00:45:00Z,,0.3"),
        (9, "expected 3 fields (timestamp,meter_id,kwh), found 4", "2026-01-01T01:00:00Z,M2,0.9,extra"),
    ]
    assert all(r["source"] == "csv:bad.csv" and r["raw_bytes"] is None for _, r in decoded)
    assert all(abs(r["first_seen"].timestamp() - time.time()) < 300 for _, r in decoded)

    readings = decoded_readings(consume(kafka, topics.readings, lambda ms: len(ms) >= 4))
    # a negative reading is a net meter exporting: delivered like any other
    assert sorted((r["meter_id"], r["energy_kwh"]) for _, r in readings) == [
        ("M1", 0.4), ("M1", 0.5), ("M2", -1.0), ("M2", 0.9)]


def _use_topics(monkeypatch, topics) -> None:
    for field, value in topics.model_dump().items():
        monkeypatch.setenv(f"WATTSUP_TOPIC_{field.upper()}", str(value))


def test_produce_csv_command_reports_and_dead_letters(kafka, tmp_path, monkeypatch):
    from wattsup.cli import app

    topics = kafka.fresh_topics(partitions=2)
    _use_topics(monkeypatch, topics)
    path = tmp_path / "readings.csv"
    path.write_text("timestamp,meter_id,kwh\n2026-01-01T00:00:00Z,M1,1\n2026-01-01T00:15:00Z,M1,x\n"
                    "2026-01-01T00:30:00Z,M1,2\n")
    result = CliRunner().invoke(app, ["produce", "csv", str(path), "--as-fast-as-possible",
                                      "--bootstrap-servers", kafka.bootstrap_servers])
    assert result.exit_code == 0, result.output
    assert "sent=2 failed=0 rejected=1" in result.output
    letters = consume(kafka, topics.dead_letters, lambda ms: len(ms) >= 1)
    assert len(letters) == 1
    record = SingleObjectSerde().decode(letters[0].value())[1]
    assert (record["source"], record["row_number"], record["reason"]) == (f"csv:{path}", 3, "non-numeric kwh 'x'")


def test_produce_single_meter_csv_paced_replay(kafka, tmp_path, monkeypatch):
    from wattsup.cli import app

    topics = kafka.fresh_topics(partitions=2)
    _use_topics(monkeypatch, topics)
    path = tmp_path / "house-9.csv"
    path.write_text("timestamp,consumption\n" + "".join(f"2026-01-01T{h:02d}:00:00Z,{h}.5\n" for h in range(4)))
    started = time.monotonic()
    result = CliRunner().invoke(app, ["produce", "csv", str(path), "--speedup", "36000",  # an hour per 0.1 s
                                      "--bootstrap-servers", kafka.bootstrap_servers])
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert "sent=4 failed=0 rejected=0" in result.output
    assert elapsed >= 0.3  # three hour-steps after the first reading
    got = decoded_readings(consume(kafka, topics.readings, lambda ms: len(ms) >= 4))
    assert [(r["meter_id"], r["energy_kwh"], r["interval_seconds"]) for _, r in got] == [
        ("house-9", h + 0.5, 3600) for h in range(4)]
    assert {p for p, _ in got} == {partition_for("house-9", 2)}  # the meter is its own feeder


def test_produce_simulate_command_writes_labels_and_sends_batches(kafka, tmp_path, monkeypatch):
    from wattsup.cli import app

    topics = kafka.fresh_topics(partitions=4)
    _use_topics(monkeypatch, topics)
    labels, readings_csv = tmp_path / "labels.csv", tmp_path / "readings.csv"
    result = CliRunner().invoke(app, [
        "produce", "simulate", "--meters", "200", "--interval", "1h", "--days", "3", "--as-fast-as-possible",
        "--seed", "5", "--anomaly-rate", "0.2", "--batch-by", "feeder", "--labels", str(labels),
        "--readings-csv", str(readings_csv), "--bootstrap-servers", kafka.bootstrap_servers])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(readings_csv, keep_default_na=False)
    assert f"sent={len(written)} failed=0 rejected=0 records={4 * 72} " in result.output
    assert "readings/s" in result.output
    events = pd.read_csv(labels)
    assert len(events) > 50 and set(events["event_id"]) == set(written.loc[written["label"] == 1, "event_id"])

    got = decoded_readings(consume(kafka, topics.readings, lambda ms: len(ms) >= 4 * 72))
    assert len(got) == len(written)
    written_ms = pd.DatetimeIndex(pd.to_datetime(written["timestamp"], utc=True)).as_unit("ms").asi8
    energy = written.set_index([written["meter_id"], written_ms])["kwh"]
    assert all(energy.loc[(r["meter_id"], r["timestamp"])] == r["energy_kwh"] for _, r in got)
    assert all(p == partition_for(r["feeder_id"], 4) for p, r in got)
