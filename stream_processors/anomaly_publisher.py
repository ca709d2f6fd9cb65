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
from schemas.serde import ANOMALY, INCIDENT
from stream_processors.durable_producer import DeliveryError, DurableProducer

log = logging.getLogger(__name__)

AnomalyDeliveryError = DeliveryError
"""The broker refused an anomaly for good; the batch must not be marked done."""


class AnomalyPublisher:
    """Sends each anomaly to its feeder's partition, keyed by meter id (idempotent, acks=all), and each
    incident record to the same partition number of the incidents topic, keyed by incident id."""

    def __init__(self, connection: KafkaConnection, topic: str, partitions: int, serde: Any,
                 incidents_topic: str | None = None, producer: DurableProducer | None = None) -> None:
        """``producer`` may be shared with the worker's other durable writes (one librdkafka client)."""
        self.topic = topic
        self.incidents_topic = incidents_topic
        self.partitions = partitions
        self.serde = serde
        self.producer = producer or DurableProducer(connection, "anomaly-producer")

    async def publish(self, anomalies: list[dict[str, Any]], incidents: list[dict[str, Any]] | None = None) -> None:
        """Send and wait for every acknowledgement, however long the broker is away.

        Incident records (``incidents``) go with the batch's anomalies, in the same wait: durable
        before the state that includes them is written, like the anomalies.

        Every record is encoded before the first is sent, so a schema registry that is away
        (``RegistryUnavailableError``) leaves nothing half sent and the caller can try again.
        Raises :class:`AnomalyDeliveryError` if the broker refuses a record for good.
        """
        incidents = incidents if self.incidents_topic else []
        if not anomalies and not incidents:
            return
        encoded = [(self.topic, a["meter_id"].encode(), self.serde.encode(ANOMALY, a),
                    partition_for(a["feeder_id"], self.partitions)) for a in anomalies]
        encoded += [(self.incidents_topic, r["incident_id"].encode(), self.serde.encode(INCIDENT, r),
                     partition_for(r["feeder_id"], self.partitions)) for r in incidents or ()]
        await self.producer.send_all(encoded, "anomalies")

    def close(self) -> None:
        self.producer.close()
