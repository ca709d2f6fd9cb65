"""Anomalies out of the worker: durable before the worker moves on, without stalling Faust.

The worker must know a batch's anomalies are acknowledged by the broker before it writes the
state that marks their readings as seen (see :mod:`stream_processors.emitted_anomalies`). Faust's
own producer hands each message through a small in-process buffer one at a time, and awaiting its
delivery futures cost more than scoring the batch (measured: the agent waited most of its time).
A librdkafka producer batches the whole micro-batch in C; its flush, which waits for the
acknowledgements, runs in a thread so the event loop keeps serving the consumer and the timers.

During a broker outage the batch simply waits: its anomalies never time out in the producer
(``message.timeout.ms`` 0), so the worker rides the outage out and goes on where it was, with an
outage message a minute at most. Only an error that waiting cannot cure (a fatal producer error,
a record the broker refuses) stops the worker, which a restart then scores again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from foundation.kafka_clients import producer_config
from foundation.kafka_logging import RateLimitedLog, quiet_config
from foundation.kafka_settings import KafkaConnection
from schemas.partitioning import partition_for
from schemas.serde import ANOMALY, INCIDENT

log = logging.getLogger(__name__)

FLUSH_STEP_SECONDS = 5.0
"""How long one wait for the acknowledgements lasts before the worker checks again (and may say it waits)."""
CLOSE_FLUSH_SECONDS = 10.0
"""At shutdown, how long to wait for acknowledgements: an unacknowledged batch is not marked done, so a
restarted worker scores it again; waiting longer would only delay the stop."""


class AnomalyDeliveryError(RuntimeError):
    """The broker refused an anomaly for good; the batch must not be marked done."""


class AnomalyPublisher:
    """Sends each anomaly to its feeder's partition, keyed by meter id (idempotent, acks=all), and each
    incident record to the same partition number of the incidents topic, keyed by incident id."""

    def __init__(self, connection: KafkaConnection, topic: str, partitions: int, serde: Any,
                 incidents_topic: str | None = None) -> None:
        self.topic = topic
        self.incidents_topic = incidents_topic
        self.partitions = partitions
        self.serde = serde
        self._producer = Producer(producer_config(connection, **{
            "linger.ms": 2,
            "message.timeout.ms": 0,  # never expire: an outage is waited out, not turned into a lost batch
            **quiet_config("anomaly-producer"),
        }))
        self._failed: list[str] = []
        self._say = RateLimitedLog(log)

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed.append(str(err))

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
        self._failed.clear()
        loop = asyncio.get_running_loop()
        for topic, key, value, partition in encoded:
            while True:
                try:
                    self._producer.produce(topic, key=key, value=value, partition=partition,
                                           on_delivery=self._delivered)
                    break
                except BufferError:  # the local queue is full (a long outage): let it drain
                    await loop.run_in_executor(None, self._producer.flush, FLUSH_STEP_SECONDS)
            self._producer.poll(0)
        waited = 0.0
        while (left := await loop.run_in_executor(None, self._producer.flush, FLUSH_STEP_SECONDS)) or self._failed:
            if self._failed:
                raise AnomalyDeliveryError(f"{len(self._failed)} anomalies refused by the broker "
                                           f"({', '.join(self._failed[:3])})")
            waited += FLUSH_STEP_SECONDS
            self._say.warning("unacknowledged", "the broker has not acknowledged %d anomalies for %.0f s; the batch "
                                                "waits (it is marked done only once they are durable)", left, waited)
        if waited:
            self._say.recovered("unacknowledged", "the broker acknowledged the waiting anomalies after %.0f s", waited)

    def close(self) -> None:
        self._producer.flush(CLOSE_FLUSH_SECONDS)
