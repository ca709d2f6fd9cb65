"""What a crashed worker already emitted: so its successor does not say it twice.

The worker makes each anomaly durable *before* it writes the state that marks the reading as
seen, so a crash never loses an anomaly. The price is a narrow window in which an anomaly is on
the topic but the state that remembers it is not in the changelog yet; after a crash those
readings come again and would be flagged again. So when a worker takes a feeder's state over
from the changelog (recovery after a crash, or a rebalance), it reads back the anomalies of that
feeder's partition emitted since the state was last written (anomalies go to their feeder's
partition, like readings and forecasts) and does not emit those again.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from foundation.kafka_logging import quiet_config
from foundation.kafka_settings import KafkaConnection
from schemas.partitioning import partition_for
from schemas.serde import ANOMALY, SerdeError

log = logging.getLogger(__name__)

REUSE_SECONDS = 30.0
"""A partition read back this recently serves the other feeders of that partition too."""


class ReadBackUnavailable(RuntimeError):
    """The anomalies topic could not be read back in time (the broker is away): try again later.

    Never answered with a partial set: a successor that missed an anomaly would emit it again.
    """


class EmittedAnomalies:
    """Reads back recently emitted anomalies per feeder, one partition at a time.

    Subclasses read back other records the worker emits to its feeders' partitions
    (:class:`~stream_processors.incident_publishing.EmittedIncidents`) by overriding :meth:`collect`.
    """

    def __init__(self, connection: KafkaConnection, topic: str, partitions: int, serde: Any,
                 timeout: float = 10.0) -> None:
        self.connection = connection
        self.topic = topic
        self.partitions = partitions
        self.serde = serde
        self.timeout = timeout
        self._cache: dict[int, tuple[float, int, dict[str, Any]]] = {}

    def collect(self, name: str, record: dict[str, Any], found: dict[str, Any]) -> None:
        """Note one decoded record of the partition in ``found`` (feeder -> what the caller needs)."""
        if name == ANOMALY:
            found.setdefault(record["feeder_id"], set()).add((record["meter_id"], int(record["timestamp"])))

    def since(self, feeder: str, since_ms: int) -> Any:
        """(meter_id, timestamp ms) of the feeder's anomalies written at or after ``since_ms``."""
        partition = partition_for(feeder, self.partitions)
        cached = self._cache.get(partition)
        if cached is not None and time.monotonic() - cached[0] < REUSE_SECONDS and cached[1] <= since_ms:
            return cached[2].get(feeder, set())
        by_feeder = self._read_partition(partition, since_ms)
        self._cache[partition] = (time.monotonic(), since_ms, by_feeder)
        return by_feeder.get(feeder, set())

    def _read_partition(self, partition: int, since_ms: int) -> dict[str, Any]:
        consumer = Consumer({**self.connection.confluent_config(), "group.id": f"wattsup-emitted-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False, **quiet_config("emitted-anomalies-consumer")})
        found: dict[str, Any] = {}
        try:
            self._read(consumer, partition, since_ms, found)
        except KafkaException as exc:
            raise ReadBackUnavailable(f"cannot read back {self.topic}[{partition}]: {exc}") from exc
        finally:
            consumer.close()
        return found

    def _read(self, consumer: Consumer, partition: int, since_ms: int, found: dict[str, Any]) -> None:
        """Fill ``found`` from the partition, from ``since_ms`` to its end offset now."""
        start = consumer.offsets_for_times([TopicPartition(self.topic, partition, since_ms)],
                                           timeout=self.timeout)[0].offset
        _, end = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=self.timeout)
        if start < 0 or start >= end:
            return
        consumer.assign([TopicPartition(self.topic, partition, start)])
        position, deadline = start, time.monotonic() + self.timeout
        while position < end and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                position = msg.offset() + 1
                try:
                    name, record = self.serde.decode(msg.value(), raw_timestamps=True)
                except SerdeError:
                    continue
                self.collect(name, record, found)
        if position < end:
            raise ReadBackUnavailable(f"read {self.topic}[{partition}] only up to offset {position} of {end} "
                                      f"within {self.timeout:.0f} s")
        log.info("read back %d records of %s[%d] emitted since %d to avoid repeating them",
                 sum(map(len, found.values())), self.topic, partition, since_ms)
