"""Producers against the real broker: what goes in comes back out, exactly, in the right partition."""

from __future__ import annotations

import io
import os
import time
from datetime import timedelta

import pytest
from confluent_kafka import Consumer

from producers.csv_source import parse_readings_csv
from producers.kafka_producer import ReadingProducer
from producers.simulator import FleetConfig, simulate_fleet
from schemas.partitioning import partition_for
from schemas.serde import DEAD_LETTER, METER_READING, METER_READING_BATCH, SingleObjectSerde

pytestmark = pytest.mark.integration


def consume(kafka, topic: str, until, timeout: float = 60.0) -> list:
    consumer = Consumer({**kafka.connection.confluent_config(), "group.id": f"t-{os.urandom(4).hex()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages: list = []
    deadline = time.monotonic() + timeout
    while not until(messages) and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(5000, timeout=0.5) if m.error() is None]
    consumer.close()
    return messages


def decoded_readings(messages) -> list[tuple[int, dict]]:
    """(partition, reading) for every reading, unpacking head-end batches."""
    serde = SingleObjectSerde()
    out = []
    for msg in messages:
        name, record = serde.decode(msg.value(), raw_timestamps=True)
        assert msg.key().decode() == record["feeder_id"]
        readings = record["readings"] if name == METER_READING_BATCH else [record]
        assert name in (METER_READING, METER_READING_BATCH)
        out += [(msg.partition(), r) for r in readings]
    return out


@pytest.mark.parametrize("batch_by_feeder", [False, True], ids=["single", "head-end-batches"])
def test_simulated_readings_round_trip_exactly(kafka, batch_by_feeder):
    topics = kafka.fresh_topics(partitions=4)
    fleet = simulate_fleet(FleetConfig(meters=120, days=1, interval=timedelta(minutes=15), meters_per_feeder=20, seed=9))
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(fleet.readings, batch_by_feeder=batch_by_feeder)
    summary = producer.summary
    assert summary.sent == len(fleet.readings) and summary.failed == 0

    expected_records = summary.records
    messages = consume(kafka, topics.readings, lambda ms: len(ms) >= expected_records)
    assert len(messages) == expected_records
    got = decoded_readings(messages)
    assert len(got) == len(fleet.readings)

    sent = {(r.meter_id, int(r.timestamp.value // 1_000_000)): r for r in fleet.readings.itertuples()}
    for partition, reading in got:
        original = sent.pop((reading["meter_id"], reading["timestamp"]))
        assert reading["energy_kwh"] == original.kwh
        assert reading["feeder_id"] == original.feeder_id
        assert reading["interval_seconds"] == 900
        assert reading["quality_flags"] == ([original.quality_flags] if original.quality_flags else [])
        assert partition == partition_for(original.feeder_id, 4)
    assert not sent  # every reading came back, none twice

    partitions_per_meter: dict[str, set[int]] = {}
    for partition, reading in got:
        partitions_per_meter.setdefault(reading["meter_id"], set()).add(partition)
    assert all(len(p) == 1 for p in partitions_per_meter.values())


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
        "2026-01-01T01:00:00Z,M2,0.9\n"
    )
    parsed = parse_readings_csv(io.StringIO(text))
    with ReadingProducer(kafka.connection, topics) as producer:
        for row in parsed.rejected:
            producer.send_dead_letter("csv:bad.csv", row.reason, raw_text=row.raw_text, row_number=row.row_number)
        producer.send_frame(parsed.readings)
    assert producer.summary.sent == 3 and producer.summary.rejected == 4 and producer.summary.dead_lettered == 4

    serde = SingleObjectSerde()
    letters = consume(kafka, topics.dead_letters, lambda ms: len(ms) >= 4)
    decoded = sorted((serde.decode(m.value()) for m in letters), key=lambda nr: nr[1]["row_number"])
    assert [name for name, _ in decoded] == [DEAD_LETTER] * 4
    assert [(r["row_number"], r["reason"], r["raw_text"]) for _, r in decoded] == [
        (3, "non-numeric kwh 'abc'", "2026-01-01T00:15:00Z,M1,abc"),
        (5, "unparseable timestamp 'yesterday'", "yesterday,M2,0.4"),
        (6, "missing meter_id", "2026-01-01T00:45:00Z,,0.3"),
        (7, "negative kwh -1", "2026-01-01T00:45:00Z,M2,-1"),
    ]
    assert all(r["source"] == "csv:bad.csv" for _, r in decoded)

    readings = decoded_readings(consume(kafka, topics.readings, lambda ms: len(ms) >= 3))
    assert sorted((r["meter_id"], r["energy_kwh"]) for _, r in readings) == [("M1", 0.4), ("M1", 0.5), ("M2", 0.9)]


def test_produce_csv_command_reports_and_dead_letters(kafka, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from wattsup.cli import app

    topics = kafka.fresh_topics(partitions=2)
    for field, value in topics.model_dump().items():
        monkeypatch.setenv(f"WATTSUP_TOPIC_{field.upper()}", str(value))
    path = tmp_path / "readings.csv"
    path.write_text("timestamp,meter_id,kwh\n2026-01-01T00:00:00Z,M1,1\n2026-01-01T00:15:00Z,M1,x\n"
                    "2026-01-01T00:30:00Z,M1,2\n")
    result = CliRunner().invoke(app, ["produce", "csv", str(path), "--as-fast-as-possible",
                                      "--bootstrap-servers", kafka.bootstrap_servers])
    assert result.exit_code == 0, result.output
    assert "sent=2 failed=0 rejected=1" in result.output
    assert len(consume(kafka, topics.dead_letters, lambda ms: len(ms) >= 1)) == 1
