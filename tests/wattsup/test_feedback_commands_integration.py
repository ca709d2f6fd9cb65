"""``wattsup feedback`` on the real broker: mark an incident from the incidents topic, list, revoke,
and export labels that ``wattsup evaluate`` reads."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from feedback.topic import read_marks
from foundation.timeutil import epoch_ms
from readings.producer import ReadingProducer
from schemas.partitioning import partition_for
from schemas.serde import INCIDENT, SingleObjectSerde
from simulation.fleet import FleetConfig, simulate_fleet
from wattsup.cli import app

pytestmark = pytest.mark.integration


def publish_incident(kafka, topic: str, incident: dict) -> None:
    producer = Producer(kafka.connection.confluent_config())
    producer.produce(topic, key=incident["incident_id"].encode(), value=SingleObjectSerde().encode(INCIDENT, incident),
                     partition=partition_for(incident["feeder_id"], 2))
    assert producer.flush(10) == 0


def test_mark_list_revoke_and_export(kafka, tmp_path, monkeypatch, trained_model_dir):
    topics = kafka.fresh_topics(partitions=2)
    env = {"WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()}}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    readings = simulate_fleet(FleetConfig(meters=4, days=2, interval=timedelta(hours=1), seed=7,
                                          meters_per_feeder=2)).readings
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(readings, batch_by_feeder=True)
    ts = epoch_ms(readings["timestamp"])
    meter = readings["meter_id"].iloc[0]
    feeder = readings["feeder_id"].iloc[0]
    started, last = int(ts[ts > ts.min()].min()), int(ts[ts > ts.min()].min()) + 2 * 3_600_000
    incident = {"incident_id": f"inc-{os.urandom(10).hex()}", "meter_id": meter, "feeder_id": feeder, "kind": "outage",
                "status": "open", "event": "opened", "started": started, "last_seen": last, "ended": None,
                "closed_by": None, "interval_seconds": 3600, "peak_severity": "WARNING", "readings": 3,
                "energy_delta_kwh": -1.5, "worst_timestamp": last, "worst_score": 0.7, "causes": [], "revision": 6,
                "updated": last}
    publish_incident(kafka, topics.incidents, incident)

    runner = CliRunner()
    result = runner.invoke(app, ["feedback", "mark", incident["incident_id"], "--verdict", "confirmed",
                                 "--note", "crew found a blown fuse"])
    assert result.exit_code == 0, result.output
    (mark,) = read_marks(kafka.connection, topics, SingleObjectSerde())
    assert (mark.meter_id, mark.verdict, mark.started, mark.ended, mark.close_incident) == (
        meter, "confirmed", started, last, False)
    assert runner.invoke(app, ["feedback", "mark", "inc-nope", "--verdict", "confirmed"]).exit_code == 2
    assert runner.invoke(app, ["feedback", "mark", incident["incident_id"], "--verdict", "maybe"]).exit_code != 0
    listed = runner.invoke(app, ["feedback", "list"])
    assert listed.exit_code == 0 and meter in listed.output and "confirmed" in listed.output

    labels = tmp_path / "labels.csv"
    exported = runner.invoke(app, ["feedback", "export", str(labels)])
    assert exported.exit_code == 0, exported.output
    evaluated = runner.invoke(app, ["evaluate", str(labels), "--model-dir", str(trained_model_dir)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "wattsup (isolation forest)" in evaluated.output
    text = labels.read_text().splitlines()
    assert text[0] == "timestamp,meter_id,kwh,label,event_id"
    assert sum(line.split(",")[3] == "1" for line in text[1:]) == 3  # the three hours of the incident

    assert runner.invoke(app, ["feedback", "revoke", incident["incident_id"]]).exit_code == 0
    (revoked,) = read_marks(kafka.connection, topics, SingleObjectSerde())
    assert revoked.revoked
