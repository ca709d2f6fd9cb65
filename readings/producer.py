"""Write readings to Kafka the way every WattsUp producer must.

* Idempotent and ``acks=all``: a retried send never duplicates a reading.
* Keyed by **feeder id** with the ``murmur2_random`` partitioner (Kafka's and Faust's hash), so
  a meter's readings always land in its feeder's partition, where its state and forecast live.
  This holds for single readings and head-end batches alike.
* Single readings (IoT meters, one ``MeterReading`` per record) or head-end batches (one
  ``MeterReadingBatch`` per feeder and interval), which is how AMI head-ends deliver data and
  what lets one stream worker score tens of thousands of readings per second.
* Every delivery report is counted in readings, not records; what is still undelivered when
  the producer closes counts as failed. Rejected input goes to the dead-letter topic with a reason.

Frames are encoded column-wise by :mod:`schemas.reading_encoder`; this module only sends bytes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd
from confluent_kafka import KafkaError, Message, Producer

from foundation.kafka_clients import producer_config
from foundation.kafka_logging import quiet_config
from foundation.kafka_settings import KafkaConnection, TopicNames
from schemas.dead_letters import dead_letter_record
from schemas.reading_encoder import (
    DEFAULT_MAX_READINGS_PER_BATCH,
    EncodedMessages,
    ReadingEncoder,
)
from schemas.serde import DEAD_LETTER, METER_READING, METER_READING_BATCH, make_serde

log = logging.getLogger(__name__)

_POLL_EVERY = 1000
"""Serve delivery reports after this many produce calls: often enough to keep the queue short,
rarely enough that polling costs nothing per message."""


@dataclass
class DeliverySummary:
    sent: int = 0
    """Readings acknowledged by the broker."""
    failed: int = 0
    """Readings the broker did not acknowledge (including those still undelivered at close)."""
    rejected: int = 0
    """Input records refused before sending (they went to the dead-letter topic)."""
    dead_lettered: int = 0
    """Dead letters acknowledged by the broker."""
    dead_letters_failed: int = 0
    """Dead letters that could not be written: the rejected input is lost, which is a failure."""
    records: int = 0
    """Kafka records acknowledged (a head-end batch is one record carrying many readings)."""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    """Delivery error name -> count of records."""

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def readings_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.dead_letters_failed == 0

    def line(self) -> str:
        lost = f" dead_letters_failed={self.dead_letters_failed}" if self.dead_letters_failed else ""
        return (f"sent={self.sent} failed={self.failed} rejected={self.rejected}{lost} records={self.records} "
                f"seconds={self.seconds:.2f} rate={self.readings_per_second:,.0f} readings/s")


class ReadingProducer:
    """Encodes and sends readings; use as a context manager so everything is flushed."""

    def __init__(
        self,
        connection: KafkaConnection,
        topics: TopicNames,
        *,
        serde: Any | None = None,
        config_overrides: dict[str, Any] | None = None,
        max_readings_per_batch: int = DEFAULT_MAX_READINGS_PER_BATCH,
        flush_timeout: float = 60.0,
        client_name: str = "readings-producer",
    ) -> None:
        """``client_name`` names the kind of client in the log: librdkafka's lines go through
        :func:`foundation.kafka_logging.quiet_config` (reconnect backoff, one line per kind a minute),
        so a broker outage costs a few lines; the producer is polled on every send and wait."""
        self.topics = topics
        self.serde = serde or make_serde(connection.schema_registry_url, **connection.registry_config())
        self.encoder = ReadingEncoder(self.serde)
        self.producer = Producer(producer_config(connection, **{**quiet_config(client_name),
                                                                 **(config_overrides or {})}))
        self.max_readings_per_batch = max_readings_per_batch
        self.flush_timeout = flush_timeout
        self.summary = DeliverySummary()
        self._in_flight = 0
        """Readings produced whose delivery report has not come back yet."""
        self._dead_letters_in_flight = 0
        self._unpolled = 0
        self._closed = False

    # -- delivery accounting -------------------------------------------------------------
    def _delivered(self, readings: int, err: KafkaError | None, _msg: Message) -> None:
        self._in_flight -= readings
        if err is None:
            self.summary.sent += readings
            self.summary.records += 1
        else:
            self.summary.failed += readings
            self.summary.errors[err.name()] = self.summary.errors.get(err.name(), 0) + 1

    def _one_delivered(self, err: KafkaError | None, msg: Message) -> None:
        self._delivered(1, err, msg)

    def _dead_letter_delivered(self, err: KafkaError | None, _msg: Message) -> None:
        self._dead_letters_in_flight -= 1
        if err is None:
            self.summary.dead_lettered += 1
        else:
            self.summary.dead_letters_failed += 1
            log.error("could not write a dead letter: %s", err)

    def _produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.05)
        self._unpolled += 1
        if self._unpolled >= _POLL_EVERY:
            self._unpolled = 0
            self.producer.poll(0)

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports; waiting here (e.g. between paced intervals) keeps counts current."""
        self.producer.poll(timeout)

    # -- sending -------------------------------------------------------------------------
    def send_messages(self, messages: EncodedMessages) -> None:
        """Send already encoded readings-topic messages (see :class:`ReadingEncoder`)."""
        topic = self.topics.readings
        if messages.readings is None:
            self._in_flight += len(messages)
            for key, value in zip(messages.keys, messages.values):
                self._produce(topic, key, value, self._one_delivered)
        else:
            for key, value, count in zip(messages.keys, messages.values, messages.readings):
                self._in_flight += count
                self._produce(topic, key, value, partial(self._delivered, count))

    def send_frame(self, frame: pd.DataFrame, *, batch_by_feeder: bool = False, head_end_id: str | None = None) -> None:
        """Send a frame of readings in its row order (delivery order), one by one or as head-end batches.

        Columns: timestamp, meter_id, feeder_id, kwh, interval_seconds, optional quality_flags.
        """
        if batch_by_feeder:
            encoded = self.encoder.batches(frame, head_end_id=head_end_id, max_readings=self.max_readings_per_batch)
        else:
            encoded = self.encoder.readings(frame)
        for messages in encoded:
            self.send_messages(messages)

    def send_reading(self, reading: dict[str, Any]) -> None:
        """One ``MeterReading`` record keyed by its feeder."""
        value = self.serde.encode(METER_READING, reading)
        self._in_flight += 1
        self._produce(self.topics.readings, reading["feeder_id"].encode(), value, self._one_delivered)

    def send_batch(self, batch: dict[str, Any]) -> None:
        """One ``MeterReadingBatch`` record keyed by its feeder (all readings must share it)."""
        count = len(batch["readings"])
        value = self.serde.encode(METER_READING_BATCH, batch)
        self._in_flight += count
        self._produce(self.topics.readings, batch["feeder_id"].encode(), value, partial(self._delivered, count))

    def send_dead_letter(self, source: str, reason: str, *, raw_text: str | None = None,
                         raw_bytes: bytes | None = None, row_number: int | None = None) -> None:
        """A rejected input record, keyed by its source so one file's rejects stay in order."""
        record = dead_letter_record(source, reason, raw_text=raw_text, raw_bytes=raw_bytes, row_number=row_number)
        self.summary.rejected += 1
        self._dead_letters_in_flight += 1
        self._produce(self.topics.dead_letters, source.encode(), self.serde.encode(DEAD_LETTER, record),
                      self._dead_letter_delivered)

    def flush(self, timeout: float | None = None) -> int:
        """Wait for outstanding deliveries; returns how many records are still undelivered."""
        remaining = self.producer.flush(self.flush_timeout if timeout is None else timeout)
        if remaining:
            log.error("%d records still undelivered after %.0f s", remaining,
                      self.flush_timeout if timeout is None else timeout)
        return remaining

    def close(self) -> DeliverySummary:
        """Flush, shut the client down and finish the summary; readings never acknowledged count as failed.

        What is still queued after the flush timeout is purged, so its delivery reports come back
        as failures now and the client stops retrying (and logging) in the background.
        """
        if not self._closed:
            self._closed = True
            if self.flush():
                self.producer.purge()
                self.producer.flush(1.0)
            self.producer.close()
            if self._in_flight:
                log.error("%d readings were never acknowledged; counted as failed", self._in_flight)
                self.summary.failed += self._in_flight
                self._in_flight = 0
            if self._dead_letters_in_flight:
                log.error("%d dead letters were never acknowledged", self._dead_letters_in_flight)
                self.summary.dead_letters_failed += self._dead_letters_in_flight
                self._dead_letters_in_flight = 0
            self.summary.finished = time.monotonic()
        return self.summary

    def __enter__(self) -> ReadingProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
