"""Write Forecast records to the compacted forecasts topic, where the meter's readings live.

Keyed by **meter id** (compaction keeps the newest forecast per meter) and sent explicitly to
``partition_for(feeder_id, partitions)``, the partition of the meter's feeder on the readings
topic, so the stream worker that holds the meter's state also holds its forecast. The producer
is the project's one readings-producer configuration (idempotent, ``acks=all``, murmur2).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from forecaster.fitting import ForecastResult
from foundation.kafka_clients import producer_config
from foundation.kafka_logging import quiet_config
from foundation.kafka_settings import KafkaConnection
from schemas.partitioning import partition_for
from schemas.serde import FORECAST, SerdeError, make_serde

log = logging.getLogger(__name__)


def forecast_record(result: ForecastResult, generated_at_ms: int) -> dict[str, Any]:
    return {
        "meter_id": result.meter_id,
        "feeder_id": result.feeder_id,
        "generated_at": generated_at_ms,
        "model_version": result.model_version,
        "interval_seconds": int(result.interval_seconds),
        "horizon": [
            {"timestamp": int(t), "expected": float(e), "lower": float(lo), "upper": float(hi)}
            for t, e, lo, hi in zip(result.end_ms.tolist(), result.expected.tolist(), result.lower.tolist(),
                                    result.upper.tolist())
        ],
    }


@dataclass
class PublishSummary:
    sent: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """Delivery reports arrive in whichever thread polls or flushes the producer: the run's, or a forecaster
    group's rebalance callback handing a partition over (:meth:`ForecastPublisher.flush`)."""

    def count(self, delivered: bool) -> None:
        with self._lock:
            if delivered:
                self.sent += 1
            else:
                self.failed += 1


class ForecastPublisher:
    """Encodes and produces forecasts; ``close()`` flushes and returns what was acknowledged."""

    def __init__(self, connection: KafkaConnection, topic: str, *, timeout: float = 30.0) -> None:
        self.topic = topic
        self.serde = make_serde(connection.schema_registry_url, **connection.registry_config())
        # A run's forecasts are sent within its close() timeout or counted as failed; the next run sends
        # them again. librdkafka's log goes through the throttle, so an outage costs a few lines.
        self.producer = Producer(producer_config(connection, **quiet_config("forecast-producer")))
        metadata = self.producer.list_topics(topic, timeout=timeout)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise ValueError(f"forecasts topic {topic!r} does not exist on {connection.bootstrap_servers}: "
                             "create it with `wattsup broker start` or `wattsup broker create-topics`")
        self.partitions = len(info.partitions)
        """The topic's real partition count: the same rule the readings' producer hash uses."""
        self.summary = PublishSummary()

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        self.summary.count(err is None)
        if err is not None:
            log.error("forecast not delivered: %s", err)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until what was sent so far is acknowledged (any thread); returns how many are still queued."""
        return self.producer.flush(timeout)

    def send(self, result: ForecastResult, generated_at_ms: int) -> bool:
        """Queue one forecast; a record the schema refuses is logged and counted as failed, not raised."""
        try:
            value = self.serde.encode(FORECAST, forecast_record(result, generated_at_ms))
        except (SerdeError, ValueError, TypeError) as exc:
            self.summary.count(False)
            log.error("forecast of meter %s not sent: %s", result.meter_id, exc)
            return False
        partition = partition_for(result.feeder_id, self.partitions)
        while True:
            try:
                self.producer.produce(self.topic, value, result.meter_id.encode(), partition=partition,
                                      on_delivery=self._delivered)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)
        return True

    def close(self, timeout: float = 60.0) -> PublishSummary:
        deadline = time.monotonic() + timeout
        remaining = self.producer.flush(timeout)
        if remaining:
            log.error("%d forecasts still undelivered after %.0f s; counted as failed", remaining, timeout)
            self.producer.purge()
            self.producer.flush(max(0.0, deadline - time.monotonic()) or 1.0)
        return self.summary
