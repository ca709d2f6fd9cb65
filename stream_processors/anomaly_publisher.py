"""Anomalies out of the worker: durable before the worker moves on, without stalling Faust.

The worker must know a batch's anomalies are acknowledged by the broker before it writes the
state that marks their readings as seen (see :mod:`stream_processors.emitted_anomalies`), so they
go through a :class:`~stream_processors.durable_producer.DurableProducer`: the whole micro-batch
handed to librdkafka at once, then one wait for the acknowledgements, riding out a broker outage.
"""

from __future__ import annotations

import logging
from typing import Any

from foundation.kafka_settings import KafkaConnection
from schemas.partitioning import partition_for
from schemas.serde import ANOMALY
from stream_processors.durable_producer import DeliveryError, DurableProducer

log = logging.getLogger(__name__)

AnomalyDeliveryError = DeliveryError
"""The broker refused an anomaly for good; the batch must not be marked done."""


class AnomalyPublisher:
    """Sends each anomaly to its feeder's partition, keyed by meter id (idempotent, acks=all)."""

    def __init__(self, connection: KafkaConnection, topic: str, partitions: int, serde: Any,
                 producer: DurableProducer | None = None) -> None:
        """``producer`` may be shared with the worker's other durable writes (one librdkafka client)."""
        self.topic = topic
        self.partitions = partitions
        self.serde = serde
        self.producer = producer or DurableProducer(connection, "anomaly-producer")

    async def publish(self, anomalies: list[dict[str, Any]]) -> None:
        """Send and wait for every acknowledgement, however long the broker is away.

        Every record is encoded before the first is sent, so a schema registry that is away
        (``RegistryUnavailableError``) leaves nothing half sent and the caller can try again.
        Raises :class:`AnomalyDeliveryError` if the broker refuses a record for good.
        """
        if not anomalies:
            return
        encoded = [(self.topic, a["meter_id"].encode(), self.serde.encode(ANOMALY, a),
                    partition_for(a["feeder_id"], self.partitions)) for a in anomalies]
        await self.producer.send_all(encoded, "anomalies")

    def close(self) -> None:
        self.producer.close()
