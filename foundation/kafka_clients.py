"""librdkafka client settings every WattsUp producer and consumer starts from.

Safety settings live here once: a producer that could duplicate or reorder a meter's readings,
or put a feeder in another partition than Java and Faust would, is not configurable.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

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


NOT_READY_YET = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                           KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
                           KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART})
"""Errors of a coordinator or partition leader that is moving or still loading (a topic created a
moment ago, a restarting broker): librdkafka does not always mark them retriable, but they pass."""


def worth_retrying(error: KafkaError) -> bool:
    """True for an error that passes by itself: retriable, or a leader or coordinator not ready yet."""
    return bool(error.retriable() or error.code() in NOT_READY_YET)
