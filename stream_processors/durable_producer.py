"""Records out of the worker, acknowledged by the broker before the worker moves on.

Anomalies and the feeders' state both leave the worker this way: a whole micro-batch of records
is handed to librdkafka, which batches them in C, and the worker then waits (in a thread, so the
event loop keeps serving the consumer and the timers) until the broker has acknowledged every
one. Faust's own producer hands each record through a small in-process buffer one at a time and
stalls the agent whenever more than 100 are waiting, which made per-record cost, not scoring,
the worker's limit.

During a broker outage the batch simply waits: records never time out in the producer
(``message.timeout.ms`` 0), so the worker rides the outage out and goes on where it was, with an
outage message a minute at most. Only an error that waiting cannot cure (a fatal producer error,
a record the broker refuses) raises :class:`DeliveryError`, and the worker stops: a restart then
scores the batch again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, Message, Producer

from foundation.kafka_clients import producer_config
from foundation.kafka_logging import RateLimitedLog, quiet_config
from foundation.kafka_settings import KafkaConnection

log = logging.getLogger(__name__)

FLUSH_STEP_SECONDS = 5.0
"""How long one wait for the acknowledgements lasts before the worker checks again (and may say it waits)."""
CLOSE_FLUSH_SECONDS = 10.0
"""At shutdown, how long to wait for acknowledgements: an unacknowledged batch is not marked done, so a
restarted worker scores it again; waiting longer would only delay the stop."""

Record = tuple[str, bytes | None, bytes, int]
"""(topic, key, value, partition) of one record to send."""


class DeliveryError(RuntimeError):
    """The broker refused a record for good; the batch must not be marked done."""


class DurableProducer:
    """One idempotent librdkafka producer (acks=all) whose sends return once all is acknowledged."""

    def __init__(self, connection: KafkaConnection, client_id: str = "stream-producer") -> None:
        self._producer = Producer(producer_config(connection, **{
            "linger.ms": 2,
            "message.timeout.ms": 0,  # never expire: an outage is waited out, not turned into a lost batch
            **quiet_config(client_id),
        }))
        self._failed: list[str] = []
        self._say = RateLimitedLog(log)

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed.append(str(err))

    async def send_all(self, records: Iterable[Record], what: str = "records") -> None:
        """Send ``records`` and wait for every acknowledgement, however long the broker is away.

        Raises :class:`DeliveryError` if the broker refuses a record for good. ``what`` names the
        records in the outage messages.
        """
        self._failed.clear()
        loop = asyncio.get_running_loop()
        produce, delivered, sent = self._producer.produce, self._delivered, 0
        for topic, key, value, partition in records:
            while True:
                try:
                    produce(topic, value, key, partition, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full (a long outage): let it drain
                    await loop.run_in_executor(None, self._producer.flush, FLUSH_STEP_SECONDS)
            sent += 1
        if not sent:
            return
        self._producer.poll(0)
        waited = 0.0
        while (left := await loop.run_in_executor(None, self._producer.flush, FLUSH_STEP_SECONDS)) or self._failed:
            if self._failed:
                raise DeliveryError(f"{len(self._failed)} {what} refused by the broker ({', '.join(self._failed[:3])})")
            waited += FLUSH_STEP_SECONDS
            self._say.warning("unacknowledged", "the broker has not acknowledged %d %s for %.0f s; the batch "
                                                "waits (it is marked done only once they are durable)", left, what,
                              waited)
        if waited:
            self._say.recovered("unacknowledged", "the broker acknowledged the waiting %s after %.0f s", what, waited)

    def close(self) -> None:
        self._producer.flush(CLOSE_FLUSH_SECONDS)
