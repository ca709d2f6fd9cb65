"""Client settings: what keeps a meter's readings unique, ordered and in its feeder's partition is fixed."""

from __future__ import annotations

from foundation.kafka_clients import PARTITIONER, consumer_config, producer_config
from foundation.kafka_settings import KafkaConnection


def test_idempotence_acks_and_partitioner_cannot_be_overridden():
    config = producer_config(KafkaConnection(bootstrap_servers="h:1"), **{
        "acks": "1", "enable.idempotence": False, "partitioner": "consistent_random", "linger.ms": 5})
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert config["partitioner"] == "murmur2_random"
    assert config["linger.ms"] == 5 and config["compression.type"] == "lz4"


def test_consumers_commit_nothing_unless_told_to():
    config = consumer_config(KafkaConnection(bootstrap_servers="h:1"), "g", **{"auto.offset.reset": "earliest"})
    assert config["group.id"] == "g" and config["enable.auto.commit"] is False
    assert config["auto.offset.reset"] == "earliest" and config["bootstrap.servers"] == "h:1"
    assert PARTITIONER == "murmur2_random"
