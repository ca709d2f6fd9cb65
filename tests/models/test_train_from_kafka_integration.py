"""`wattsup model train --from-kafka` replays history from the real broker."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from producers.kafka_producer import ReadingProducer
from producers.simulator import FleetConfig, simulate_fleet
from wattsup.cli import app
from wattsup.readings_history import read_readings

pytestmark = pytest.mark.integration


def test_read_readings_returns_exactly_what_was_produced_in_the_time_range(kafka):
    topics = kafka.fresh_topics(partitions=3)
    frame = simulate_fleet(FleetConfig(meters=30, days=5, interval=timedelta(hours=1), seed=12)).readings
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(frame.iloc[: len(frame) // 2], batch_by_feeder=True)
        producer.send_frame(frame.iloc[len(frame) // 2:])
    back = read_readings(kafka.connection, topics.readings)
    assert len(back) == len(frame)
    assert sorted(zip(back["meter_id"], back["timestamp"], back["kwh"])) == \
        sorted(zip(frame["meter_id"], frame["timestamp"], frame["kwh"]))
    since = frame["timestamp"].min() + timedelta(days=2)
    part = read_readings(kafka.connection, topics.readings, since=since)
    assert len(part) == int((frame["timestamp"] >= since).sum())


def test_model_train_from_kafka(kafka, tmp_path, monkeypatch):
    topics = kafka.fresh_topics(partitions=3)
    frame = simulate_fleet(FleetConfig(meters=30, days=6, interval=timedelta(hours=1), seed=13)).readings
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(frame, batch_by_feeder=True)
    monkeypatch.setenv("WATTSUP_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("WATTSUP_TOPIC_READINGS", topics.readings)
    result = CliRunner().invoke(app, ["model", "train", "--from-kafka", "--model-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [version] = [p for p in tmp_path.iterdir() if p.is_dir()]
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["meters"] == 30 and meta["rows"] > 2000
    assert meta["source"].startswith(f"kafka:{topics.readings}")
