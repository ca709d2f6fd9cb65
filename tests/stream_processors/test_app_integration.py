"""The stream worker on the real broker: quality against labels, dead letters, runtime sensitivity."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pandas as pd
import pytest
from confluent_kafka import Consumer

from detection.evaluation import evaluate_flags
from readings.producer import ReadingProducer
from schemas.serde import SingleObjectSerde
from simulation.fleet import FleetConfig, simulate_fleet
from tests.stream_processors.stream_checks import flags_for, read_anomalies

pytestmark = pytest.mark.integration


def test_streamed_fleet_yields_explained_anomalies_matching_labels(kafka, stream_workers, trained_model_dir):
    topics = kafka.fresh_topics(partitions=4)
    fleet = simulate_fleet(FleetConfig(meters=200, days=14, interval=timedelta(hours=1), seed=202))
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(fleet.readings, batch_by_feeder=True)
    worker = stream_workers.start(topics, trained_model_dir, app_id=f"quality-{os.urandom(3).hex()}")
    worker.wait_for("wattsup_stream_readings_processed_total", len(fleet.readings), timeout=180)

    anomalies = read_anomalies(kafka, topics.anomalies)
    assert not anomalies.duplicated(["meter_id", "timestamp"]).any()
    assert anomalies["causes"].map(len).gt(0).all()
    assert anomalies["causes"].map(lambda cs: all(c["text"] for c in cs)).all()
    assert set(anomalies["severity"]) <= {"INFO", "WARNING", "CRITICAL"}

    flags = flags_for(fleet.readings, anomalies)
    report = evaluate_flags(fleet.readings, flags, flags.astype(float), "stream")
    # On this original household fleet the detector for real meters (issue 12) trades recall for
    # precision: measured recall 0.72, precision 0.89 (the previous detector: 0.90 / 0.91). Small
    # spikes on noisy households fall under its materiality gate; recall 0.9 here is still the
    # goal (issue 12 is open on it). These bounds catch a further regression.
    assert report.event_recall >= 0.7, report
    assert report.event_precision >= 0.85, report


def test_bad_messages_are_dead_lettered_and_sensitivity_changes_at_runtime(kafka, stream_workers, trained_model_dir):
    from confluent_kafka import Producer

    from foundation.sensitivity import publish_sensitivity
    from schemas.serde import DEAD_LETTER

    topics = kafka.fresh_topics(partitions=4)
    fleet = simulate_fleet(FleetConfig(meters=100, days=8, interval=timedelta(hours=1), seed=404, anomaly_rate=0.0))
    readings = fleet.readings
    days = readings["timestamp"].dt.floor("D")
    first, second, third = readings[days < days.min() + pd.Timedelta(days=4)], \
        readings[(days >= days.min() + pd.Timedelta(days=4)) & (days < days.min() + pd.Timedelta(days=6))], \
        readings[days >= days.min() + pd.Timedelta(days=6)]

    worker = stream_workers.start(topics, trained_model_dir, app_id=f"ops-{os.urandom(3).hex()}")
    raw = Producer(kafka.connection.confluent_config())
    raw.produce(topics.readings, key=b"F0001", value=b"not avro at all")
    raw.produce(topics.readings, key=b"F0001", value=b"\xc3\x01" + b"\x00" * 8 + b"unknown schema")
    raw.flush(10)
    serde = SingleObjectSerde()
    # A meter whose clock runs days ahead, and one reset to 1999: dead-lettered with the reason, so
    # neither leaves that meter's later, correct readings "late".
    wrong_clocks = [{"meter_id": meter, "feeder_id": "F0001", "timestamp": stamp, "energy_kwh": 0.5,
                     "interval_seconds": 3600, "voltage_v": None, "power_kw": None, "quality_flags": []}
                    for meter, stamp in (("M0001", int((time.time() + 3 * 86400) * 1000)),
                                         ("M0002", 915_148_800_000))]  # 1999-01-01
    with ReadingProducer(kafka.connection, topics) as producer:
        for reading in wrong_clocks:
            producer.send_reading(reading)
        producer.send_frame(first, batch_by_feeder=True)
    worker.wait_for("wattsup_stream_readings_processed_total", len(first))
    worker.wait_for("wattsup_stream_dead_letters_total", 4)

    letters = [serde.decode(m) for m in _consume_values(kafka, topics.dead_letters, 4)]
    assert [name for name, _ in letters] == [DEAD_LETTER] * 4
    reasons = sorted(r["reason"] for _, r in letters)
    assert reasons[0].startswith("meter M0001: timestamp ") and "ahead of the current time" in reasons[0]
    assert reasons[1].startswith("meter M0002: timestamp ") and "before 2000-01-01" in reasons[1]
    assert reasons[2].startswith("undecodable message: not Avro single-object encoded")
    assert "unknown writer schema fingerprint" in reasons[3]
    assert all(r["source"].startswith(f"topic:{topics.readings}[") for _, r in letters)
    # The wrong clock left no meter behind: late readings are only the ones the simulator delivered late
    # (accepted, the future stamp would have made each of M0001's 96 later readings late too).
    delivered_late = int(first["quality_flags"].str.contains("LATE").sum())
    assert 0 < worker.metric("wattsup_stream_late_readings_total") <= delivered_late

    # Clean data at sensitivity 1, then the same kind of data at sensitivity 10: more flags.
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(second, batch_by_feeder=True)
    worker.wait_for("wattsup_stream_readings_processed_total", len(first) + len(second))
    calm = worker.metric("wattsup_stream_anomalies_total")
    applied = worker.metric("wattsup_stream_control_updates_total")
    publish_sensitivity(kafka.connection, topics, 10.0)
    worker.wait_for("wattsup_stream_control_updates_total", applied + 1)
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(third, batch_by_feeder=True)
    worker.wait_for("wattsup_stream_readings_processed_total", len(readings))
    sensitive = worker.metric("wattsup_stream_anomalies_total") - calm
    second_rate = calm / len(second)  # includes the cold-start part, an upper bound of the calm rate
    assert sensitive / len(third) > 2 * second_rate, (calm, sensitive)


def _consume_values(kafka, topic: str, n: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer({**kafka.connection.confluent_config(), "group.id": f"t-{os.urandom(4).hex()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(values) < n and time.monotonic() < deadline:
        values += [m.value() for m in consumer.consume(100, timeout=0.5) if m.error() is None]
    consumer.close()
    return values
