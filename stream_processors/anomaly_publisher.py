"""Anomalies out of the worker: durable before the worker moves on, without stalling Faust.

The worker must know a batch's anomalies are acknowledged by the broker before it writes the
state that marks their readings as seen (see :mod:`stream_processors.emitted_anomalies`). Faust's
own producer hands each message through a small in-process buffer one at a time, and awaiting its
delivery futures cost more than scoring the batch (measured: the agent waited most of its time).
A librdkafka producer batches the whole micro-batch in C; its flush, which waits for the
acknowledgements, runs in a thread so the event loop keeps serving the consumer and the timers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from foundation.kafka_clients import producer_config
from foundation.kafka_settings import KafkaConnection
from schemas.partitioning import partition_for
from schemas.serde import ANOMALY

log = logging.getLogger(__name__)


class AnomalyDeliveryError(RuntimeError):
    """The broker did not acknowledge every anomaly of a batch; the batch must not be marked done."""


class AnomalyPublisher:
    """Sends each anomaly to its feeder's partition, keyed by meter id (idempotent, acks=all)."""

    def __init__(self, connection: KafkaConnection, topic: str, partitions: int, serde: Any,
                 flush_timeout: float = 120.0) -> None:
        self.topic = topic
        self.partitions = partitions
        self.serde = serde
        self.flush_timeout = flush_timeout
        self._producer = Producer(producer_config(connection, **{"linger.ms": 2}))
        self._failed: list[str] = []

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed.append(str(err))

    async def publish(self, anomalies: list[dict[str, Any]]) -> None:
        """Send and wait for every acknowledgement; raises :class:`AnomalyDeliveryError` otherwise."""
        if not anomalies:
            return
        self._failed.clear()
        for anomaly in anomalies:
            self._producer.produce(self.topic, key=anomaly["meter_id"].encode(),
                                   value=self.serde.encode(ANOMALY, anomaly),
                                   partition=partition_for(anomaly["feeder_id"], self.partitions),
                                   on_delivery=self._delivered)
            self._producer.poll(0)
        left = await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, self.flush_timeout)
        if left or self._failed:
            raise AnomalyDeliveryError(f"{left} anomalies not acknowledged within {self.flush_timeout:.0f} s, "
                                       f"{len(self._failed)} failed ({', '.join(self._failed[:3])})")

    def close(self) -> None:
        self._producer.flush(self.flush_timeout)
