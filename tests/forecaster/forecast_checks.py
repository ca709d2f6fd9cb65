"""Checks the forecaster's integration tests share: the forecasts topic read back."""

from __future__ import annotations

import os
import time

from confluent_kafka import Consumer, TopicPartition

from schemas.serde import FORECAST, SingleObjectSerde


def read_forecasts(kafka, topic: str) -> list[tuple[str, int, dict]]:
    """(key, partition, record) of everything on the topic, from the beginning to the end offsets."""
    consumer = Consumer({**kafka.connection.confluent_config(), "group.id": f"t-{os.urandom(4).hex()}",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    serde, out = SingleObjectSerde(), []
    remaining = {p for p, end in ends.items() if end > 0}
    deadline = time.monotonic() + 30
    while remaining and time.monotonic() < deadline:
        for msg in consumer.consume(500, timeout=0.5):
            if msg.error() is not None:
                continue
            name, record = serde.decode(msg.value(), raw_timestamps=True)
            assert name == FORECAST
            out.append((msg.key().decode(), msg.partition(), record))
            if msg.offset() >= ends[msg.partition()] - 1:
                remaining.discard(msg.partition())
    consumer.close()
    assert not remaining, f"could not read partitions {remaining} of {topic} to their end"
    return out
