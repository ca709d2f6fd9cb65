"""confluent-kafka's ``murmur2_random`` partitioner on a real broker agrees with ``partition_for``.

Producers let librdkafka pick the partition of keyed readings, while the forecaster computes the
feeder's partition itself; if the two disagreed, a meter's forecast would miss its readings.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from foundation.kafka_clients import PARTITIONER
from schemas.partitioning import partition_for

from .test_partitioning import JAVA_VECTORS

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

PARTITIONS = 7  # odd, so a wrong modulus or sign handling shows up


@pytest.fixture
def topic(kafka) -> str:
    name = f"partitioning-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka.connection.confluent_config())
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    futures[name].result(timeout=30)
    yield name
    admin.delete_topics([name])[name].result(timeout=30)


def test_librdkafka_murmur2_random_matches_partition_for(kafka, topic):
    keys = [f"F{i:04d}" for i in range(300)] + [f"meter-{uuid.uuid4()}" for i in range(100)]
    keys += [key for key, *_ in JAVA_VECTORS if key]  # an empty key is not a "null" key, see below
    producer = Producer({**kafka.connection.confluent_config(), "partitioner": PARTITIONER, "linger.ms": 5})
    delivered: dict[str, int] = {}
    errors: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered[msg.key().decode("utf-8")] = msg.partition()

    for key in keys:
        producer.produce(topic, key=key.encode("utf-8"), value=b"x", on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert not errors
    assert len(delivered) == len(keys)
    mismatches = {k: (p, partition_for(k, PARTITIONS)) for k, p in delivered.items() if p != partition_for(k, PARTITIONS)}
    assert not mismatches, f"librdkafka vs partition_for: {dict(list(mismatches.items())[:10])}"
    assert len(set(delivered.values())) == PARTITIONS  # the keys spread over every partition


def test_empty_key_goes_where_java_puts_it(kafka, topic):
    """Java hashes an empty (non-null) key; librdkafka must too, not spread it at random like a null key."""
    producer = Producer({**kafka.connection.confluent_config(), "partitioner": PARTITIONER})
    partitions: list[int] = []
    for _ in range(20):
        producer.produce(topic, key=b"", value=b"x", on_delivery=lambda err, msg: partitions.append(
            -1 if err else msg.partition()))
    if producer.flush(30):
        raise KafkaException("messages still queued after 30 s")
    assert set(partitions) == {partition_for(b"", PARTITIONS)}
