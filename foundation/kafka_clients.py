"""librdkafka client settings every WattsUp producer and consumer starts from.

Safety settings live here once: a producer that could duplicate or reorder a meter's readings,
or put a feeder in another partition than Java and Faust would, is not configurable.
"""

from __future__ import annotations

from typing import Any

from foundation.kafka_settings import KafkaConnection

PARTITIONER = "murmur2_random"
"""The librdkafka partitioner that agrees with Kafka's Java client and Faust (murmur2); librdkafka's
default is CRC32, which would put a feeder in another partition than its state and forecasts."""


def producer_config(connection: KafkaConnection, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings of every producer; ``overrides`` may tune batching, not safety."""
    config = {
        **connection.confluent_config(),
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 256 * 1024,
        **overrides,
    }
    # Not overridable: without them a retry could duplicate or reorder a meter's readings, and
    # librdkafka's default partitioner would put a feeder elsewhere than Java/Faust expect.
    config.update({"enable.idempotence": True, "acks": "all", "partitioner": PARTITIONER})
    return config


def consumer_config(connection: KafkaConnection, group_id: str, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings of a consumer that commits nothing unless told to (``overrides``)."""
    return {**connection.confluent_config(), "group.id": group_id, "enable.auto.commit": False, **overrides}
