"""A local three-broker KRaft cluster loses a broker (kill -9) and the pipeline loses nothing.

Three processes, three broker ports, one cluster id, every node a controller. Topics are created
by the project's own `ensure_topics` with replication factor 3 and min.insync.replicas 2 (the
`WATTSUP_KAFKA_*` settings any deployment uses); readings are written by the project's
`ReadingProducer` (idempotent, acks=all) before, while and after one broker is killed; every
reading the broker acknowledged must be read back by the project's history reader, and a stream
worker connected to the cluster must keep scoring through the loss.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pandas as pd
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from deploy.kafka.launcher import LocalKafkaCluster
from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.topics import ensure_topics
from readings.history import read_readings
from readings.producer import ReadingProducer
from simulation.fleet import FleetConfig, simulate_fleet

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path):
    cluster = LocalKafkaCluster(tmp_path / "cluster", nodes=3, heap="320m")
    cluster.start(timeout=180)
    yield cluster
    cluster.stop()


def _leaders(admin: AdminClient, topic: str) -> dict[int, int]:
    return {p: meta.leader for p, meta in admin.list_topics(topic, timeout=10).topics[topic].partitions.items()}


def _keys(frame: pd.DataFrame) -> set[tuple[str, int]]:
    stamps = (pd.to_datetime(frame["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    return set(zip(frame["meter_id"].astype(str), stamps))


def test_pipeline_survives_losing_one_of_three_brokers(cluster, tmp_path, monkeypatch):
    from tests.conftest import WorkerFactory

    connection = KafkaConnection(bootstrap_servers=cluster.bootstrap_servers, replication_factor=3,
                                 min_insync_replicas=2)
    topics = TopicNames(partitions=4)
    ensure_topics(connection, topics)
    admin = AdminClient(connection.confluent_config())
    names = (topics.readings, topics.anomalies, topics.forecasts, topics.control, topics.dead_letters)
    deadline = time.monotonic() + 30
    while True:  # each broker learns of new topics from the controller a moment apart
        md = admin.list_topics(timeout=10)
        if all(name in md.topics for name in names) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    for name in names:
        assert all(len(p.replicas) == 3 for p in md.topics[name].partitions.values()), name
    resource = ConfigResource(ConfigResource.Type.TOPIC, topics.readings)
    assert admin.describe_configs([resource])[resource].result()["min.insync.replicas"].value == "2"

    readings = simulate_fleet(FleetConfig(meters=60, days=3, interval=timedelta(hours=1), seed=77)).readings
    thirds = [readings.iloc[i * len(readings) // 3:(i + 1) * len(readings) // 3] for i in range(3)]

    # The stream worker's own topics (changelogs) follow the same replication settings.
    monkeypatch.setenv("WATTSUP_KAFKA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("WATTSUP_KAFKA_MIN_INSYNC_REPLICAS", "2")
    workers = WorkerFactory(cluster, tmp_path)  # anything with .bootstrap_servers
    worker = workers.start(topics, tmp_path / "no-models", app_id=f"cluster-{os.urandom(3).hex()}")
    try:
        with ReadingProducer(connection, topics) as producer:
            producer.send_frame(thirds[0])
            producer.flush(60)
        worker.wait_for("wattsup_stream_readings_processed_total", 1, timeout=180)

        # Kill the broker leading most readings partitions, while the producer keeps writing.
        leaders = _leaders(admin, topics.readings)
        victim = max(set(leaders.values()), key=list(leaders.values()).count)
        with ReadingProducer(connection, topics) as producer:
            producer.send_frame(thirds[1].iloc[: len(thirds[1]) // 2])
            producer.poll(0)
            cluster.node(victim).kill()
            producer.send_frame(thirds[1].iloc[len(thirds[1]) // 2:])
            producer.flush(120)
            during = producer.summary
        with ReadingProducer(connection, topics) as producer:
            producer.send_frame(thirds[2])
        after = producer.summary
        assert during.failed == 0 and after.failed == 0, (during.line(), during.errors, after.line(), after.errors)
        assert len(cluster.running()) == 2

        # New leaders on the two survivors; writes needed two in-sync replicas and got them.
        assert victim not in _leaders(admin, topics.readings).values()

        # Every acknowledged reading is on the cluster, exactly once (idempotent producer).
        back = read_readings(connection, topics.readings, timeout=60)
        assert len(back) == len(readings)
        assert _keys(back) == _keys(readings)

        # The stream worker kept going on the two survivors and scored what was sent after the loss.
        scored = worker.wait_for("wattsup_stream_readings_processed_total", 0.95 * len(readings), timeout=240)
        assert scored <= len(readings)

        # The killed broker comes back and catches up: every readings partition has 3 in-sync replicas again.
        cluster.node(victim).start(timeout=120)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            parts = admin.list_topics(topics.readings, timeout=10).topics[topics.readings].partitions.values()
            if all(len(p.isrs) == 3 for p in parts):
                break
            time.sleep(1)
        assert all(len(p.isrs) == 3 for p in parts), [(p.id, p.isrs) for p in parts]
    finally:
        worker.stop()
