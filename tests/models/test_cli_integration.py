"""`wattsup model train --from-kafka` replays history from the real broker."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from readings.producer import ReadingProducer
from simulation.fleet import FleetConfig, simulate_fleet
from wattsup.cli import app

pytestmark = pytest.mark.integration




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
