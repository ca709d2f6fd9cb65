"""The consumer-lag exporter against the real broker: lag per partition is end minus committed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from deploy.kafka.launcher import free_port
from deploy.lag_exporter.collector import ConsumerLagCollector
from deploy.lag_exporter.lag import LagReader

pytestmark = pytest.mark.integration


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for labels, value in re.findall(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.M):
        found[tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels)))] = float(value)
    return found


@pytest.fixture
def group_with_known_lag(kafka):
    """4 partitions with 30/31/32/33 records; a group that committed 10, 0 (nothing), 20, 33."""
    topics = kafka.fresh_topics(partitions=4)
    producer = Producer(kafka.connection.confluent_config())
    counts = {0: 30, 1: 31, 2: 32, 3: 33}
    for partition, count in counts.items():
        for i in range(count):
            producer.produce(topics.readings, value=f"r{i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    group = f"lag-test-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({**kafka.connection.confluent_config(), "group.id": group, "enable.auto.commit": False})
    committed = {0: 10, 2: 20, 3: 33}
    offsets = [TopicPartition(topics.readings, p, o) for p, o in committed.items()]
    deadline = time.monotonic() + 60
    while True:  # the first group on a fresh broker meets a coordinator that is still loading
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            break
        except KafkaException as exc:
            loading = exc.args[0].code() in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                             KafkaError.COORDINATOR_NOT_AVAILABLE)
            if not (exc.args[0].retriable() or loading) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    consumer.close()
    return topics, group, counts, committed


def test_collector_reports_lag_per_partition(kafka, group_with_known_lag):
    topics, group, counts, committed = group_with_known_lag
    reader = LagReader(kafka.connection.confluent_config(), groups=[group],
                       topics=[topics.readings, topics.anomalies])
    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(reader))
    text = generate_latest(registry).decode()

    lag = _samples(text, "wattsup_kafka_consumer_lag_messages")
    assert lag == {
        (("group", group), ("partition", str(p)), ("topic", topics.readings)): counts[p] - offset
        for p, offset in committed.items()
    }
    ends = _samples(text, "wattsup_kafka_topic_end_offset")
    for p, count in counts.items():
        assert ends[(("partition", str(p)), ("topic", topics.readings))] == count
        assert ends[(("partition", str(p)), ("topic", topics.anomalies))] == 0
    assert "wattsup_kafka_lag_exporter_up 1.0" in text


def test_unreachable_cluster_shows_up_zero_not_stale_lag():
    port = free_port()  # nothing listens there
    registry = CollectorRegistry()
    reader = LagReader({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0}, groups=["g"], topics=["t"],
                       timeout=1.0)
    registry.register(ConsumerLagCollector(reader))
    text = generate_latest(registry).decode()
    assert "wattsup_kafka_lag_exporter_up 0.0" in text
    assert "wattsup_kafka_lag_exporter_errors_total 1.0" in text
    assert "wattsup_kafka_consumer_lag_messages{" not in text


def test_groups_without_commits_and_on_a_fresh_group_coordinator_do_not_crash(kafka):
    """A group that never committed (or does not exist) reports nothing, and the process lives.

    Regression test: AdminClient.list_consumer_group_offsets segfaulted here (confluent-kafka 2.16.0).
    """
    topics = kafka.fresh_topics(partitions=2)
    reader = LagReader(kafka.connection.confluent_config(), groups=[f"never-{uuid.uuid4().hex[:8]}"],
                       topics=[topics.readings])
    try:
        snapshot = reader.snapshot()
    finally:
        reader.close()
    assert snapshot.lags == []
    assert snapshot.end_offsets == {(topics.readings, 0): 0, (topics.readings, 1): 0}


def test_lag_exporter_command_serves_every_group(kafka, group_with_known_lag, tmp_path):
    topics, group, counts, committed = group_with_known_lag
    port = free_port()
    env = {**os.environ, "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "WATTSUP_TOPIC_READINGS": topics.readings, "WATTSUP_LAG_EXPORTER_PORT": str(port)}
    log_path = tmp_path / "lag-exporter.log"
    process = subprocess.Popen([sys.executable, "-m", "wattsup.cli", "lag-exporter"], env=env,
                               stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.3)
        lag = _samples(text, "wattsup_kafka_consumer_lag_messages")
        # No --group: every group is listed, ours among them, with the exact lag.
        assert lag[(("group", group), ("partition", "0"), ("topic", topics.readings))] == counts[0] - committed[0]
        assert lag[(("group", group), ("partition", "3"), ("topic", topics.readings))] == 0
        assert (("group", group), ("partition", "1"), ("topic", topics.readings)) not in lag
    finally:
        process.terminate()
        process.wait(15)
    assert process.returncode == 0, log_path.read_text()
