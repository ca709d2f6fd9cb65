"""The local Kafka launcher against the real broker: restart durability and clear errors."""

from __future__ import annotations

import os
import socket

import pytest
from confluent_kafka import Consumer, Producer

from deploy.kafka.launcher import BrokerError, LocalKafkaNode, free_port
from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.topics import ensure_topics, topic_offsets

pytestmark = pytest.mark.integration


def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"check-{os.urandom(4).hex()}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    values: list[bytes] = []
    import time

    deadline = time.monotonic() + timeout
    while len(values) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=0.5):
            if msg.error() is None:
                values.append(msg.value())
    consumer.close()
    return values


def test_records_survive_kill_9_and_restart(tmp_path, broker_factory):
    node = broker_factory(tmp_path / "kafka")
    try:
        connection = KafkaConnection(bootstrap_servers=node.bootstrap_servers)
        topics = TopicNames(partitions=3)
        created = ensure_topics(connection, topics)
        assert set(created) == {topics.readings, topics.forecasts, topics.anomalies, topics.dead_letters, topics.control,
                                topics.incidents, topics.feedback}
        assert ensure_topics(connection, topics) == []  # idempotent

        producer = Producer({"bootstrap.servers": node.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
        sent = [f"reading-{i}".encode() for i in range(5000)]
        for i, value in enumerate(sent):
            producer.produce(topics.readings, key=f"F{i % 17}".encode(), value=value)
            producer.poll(0)
        assert producer.flush(30) == 0

        node.kill()  # kill -9, as a crash would
        assert not node.is_running()
        node.start(timeout=120)

        received = _consume_all(node.bootstrap_servers, topics.readings, len(sent))
        assert sorted(received) == sorted(sent)
        assert sum(topic_offsets(connection, [topics.readings])[topics.readings]) == len(sent)
    finally:
        node.stop()

    # A clean stop and start keeps the data too, and does not re-format storage.
    node.start(timeout=120)
    try:
        assert len(_consume_all(node.bootstrap_servers, topics.readings, len(sent))) == len(sent)
    finally:
        node.stop()


def test_forecasts_topic_is_compacted(kafka):
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(kafka.connection.confluent_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, kafka.topics.forecasts)
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact"
    md = admin.list_topics(timeout=10)
    assert len(md.topics[kafka.topics.readings].partitions) == kafka.topics.partitions
    assert len(md.topics[kafka.topics.forecasts].partitions) == kafka.topics.partitions


def test_port_taken_is_a_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        node = LocalKafkaNode(data_dir=tmp_path, port=port, controller_port=free_port())
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            node.start(timeout=5)


def test_startup_timeout_shows_log_tail(tmp_path):
    node = LocalKafkaNode(data_dir=tmp_path, port=free_port(), controller_port=free_port())
    try:
        with pytest.raises(BrokerError, match=r"did not come up .* within 0 s; last lines of .*broker\.log"):
            node.start(timeout=0.01)
    finally:
        node.stop()


def test_broker_that_dies_at_start_reports_its_log(tmp_path):
    node = LocalKafkaNode(data_dir=tmp_path, port=free_port(), controller_port=free_port(),
                          extra_properties={"num.network.threads": "not-a-number"})
    with pytest.raises(BrokerError) as info:
        node.start(timeout=60)
    assert "num.network.threads" in str(info.value)


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn on PATH
    node = LocalKafkaNode(data_dir=tmp_path / "d", port=free_port(), cache_dir=tmp_path / "empty-cache")
    with pytest.raises(BrokerError, match="`java` is not on PATH"):
        node.start(timeout=5)
