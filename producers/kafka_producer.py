"""Write readings to Kafka the way every WattsUp producer must.

* Idempotent and ``acks=all``: a retried send never duplicates a reading.
* Keyed by **feeder id** with the ``murmur2_random`` partitioner (Kafka's and Faust's hash), so
  a meter's readings always land in its feeder's partition, where its state and forecast live.
* Single readings (IoT meters, one ``MeterReading`` per record) or head-end batches (one
  ``MeterReadingBatch`` per feeder and interval), which is how AMI head-ends deliver data and
  what lets one stream worker score tens of thousands of readings per second.
* Every delivery report is counted; rejected input goes to the dead-letter topic with a reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import KafkaError, Message, Producer

from schemas.dead_letters import dead_letter_record
from schemas.partitioning import PARTITIONER
from schemas.serde import DEAD_LETTER, METER_READING, METER_READING_BATCH, make_serde
from wattsup.kafka_settings import KafkaConnection, TopicNames

log = logging.getLogger(__name__)


@dataclass
class DeliverySummary:
    sent: int = 0
    """Readings acknowledged by the broker."""
    failed: int = 0
    """Readings the broker did not acknowledge."""
    rejected: int = 0
    """Input records refused before sending (they went to the dead-letter topic)."""
    dead_lettered: int = 0
    records: int = 0
    """Kafka records acknowledged (a head-end batch is one record carrying many readings)."""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def readings_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"sent={self.sent} failed={self.failed} rejected={self.rejected} records={self.records} "
                f"seconds={self.seconds:.2f} rate={self.readings_per_second:,.0f} readings/s")


def producer_config(connection: KafkaConnection, **overrides: Any) -> dict[str, Any]:
    return {
        **connection.confluent_config(),
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": PARTITIONER,
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        **overrides,
    }


class ReadingProducer:
    """Encodes and sends readings; use as a context manager so everything is flushed."""

    def __init__(
        self,
        connection: KafkaConnection,
        topics: TopicNames,
        *,
        serde: Any | None = None,
        config_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.topics = topics
        self.serde = serde or make_serde(connection.schema_registry_url, **connection.registry_config())
        self.producer = Producer(producer_config(connection, **(config_overrides or {})))
        self.summary = DeliverySummary()

    # -- delivery accounting -------------------------------------------------------------
    def _on_delivery(self, readings: int) -> Callable[[KafkaError | None, Message], None]:
        def callback(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                self.summary.sent += readings
                self.summary.records += 1
            else:
                self.summary.failed += readings
                self.summary.errors[err.name()] = self.summary.errors.get(err.name(), 0) + 1

        return callback

    def _on_dead_letter(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.summary.dead_lettered += 1
        else:
            log.error("could not write a dead letter: %s", err)

    def _produce(self, topic: str, key: bytes, value: bytes, on_delivery: Callable) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.05)
        self.producer.poll(0)

    # -- sending -------------------------------------------------------------------------
    def send_reading(self, reading: dict[str, Any]) -> None:
        """One ``MeterReading`` record keyed by its feeder."""
        value = self.serde.encode(METER_READING, reading)
        self._produce(self.topics.readings, reading["feeder_id"].encode(), value, self._on_delivery(1))

    def send_batch(self, batch: dict[str, Any]) -> None:
        """One ``MeterReadingBatch`` record (all readings must share the batch's feeder)."""
        value = self.serde.encode(METER_READING_BATCH, batch)
        self._produce(self.topics.readings, batch["feeder_id"].encode(), value, self._on_delivery(len(batch["readings"])))

    def send_dead_letter(self, source: str, reason: str, *, raw_text: str | None = None,
                         raw_bytes: bytes | None = None, row_number: int | None = None) -> None:
        record = dead_letter_record(source, reason, raw_text=raw_text, raw_bytes=raw_bytes, row_number=row_number)
        self.summary.rejected += 1
        self._produce(self.topics.dead_letters, source.encode(), self.serde.encode(DEAD_LETTER, record),
                      self._on_dead_letter)

    def send_frame(self, frame: pd.DataFrame, *, batch_by_feeder: bool = False, head_end_id: str | None = None) -> None:
        """Send a frame of readings (columns as :func:`reading_records` expects) in its row order."""
        if batch_by_feeder:
            for batch in feeder_batches(frame, head_end_id=head_end_id):
                self.send_batch(batch)
        else:
            for reading in reading_records(frame):
                self.send_reading(reading)

    def flush(self, timeout: float = 60.0) -> int:
        remaining = self.producer.flush(timeout)
        if remaining:
            log.error("%d records still undelivered after %.0f s", remaining, timeout)
        return remaining

    def close(self) -> DeliverySummary:
        remaining = self.flush()
        self.summary.failed += remaining
        self.summary.finished = time.monotonic()
        return self.summary

    def __enter__(self) -> ReadingProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reading_records(frame: pd.DataFrame) -> Iterable[dict[str, Any]]:
    """``MeterReading`` dicts from a frame with timestamp, meter_id, feeder_id, kwh, interval_seconds.

    Iterates plain numpy columns (not ``iterrows``): building the dicts is on the hot path.
    """
    ts = frame["timestamp"].dt.as_unit("ms").astype("int64").to_numpy()
    meters = frame["meter_id"].to_numpy()
    feeders = frame["feeder_id"].to_numpy()
    kwh = frame["kwh"].to_numpy(dtype=float)
    interval = frame["interval_seconds"].to_numpy(dtype=np.int64)
    flags = frame["quality_flags"].to_numpy() if "quality_flags" in frame else None
    for i in range(len(frame)):
        yield {
            "meter_id": meters[i],
            "feeder_id": feeders[i],
            "timestamp": int(ts[i]),
            "energy_kwh": float(kwh[i]),
            "interval_seconds": int(interval[i]),
            "voltage_v": None,
            "power_kw": None,
            "quality_flags": flags[i].split(";") if flags is not None and flags[i] else [],
        }


def feeder_batches(frame: pd.DataFrame, *, head_end_id: str | None = None, max_readings: int = 5000) -> Iterable[dict[str, Any]]:
    """Head-end uploads: consecutive rows of one feeder become one ``MeterReadingBatch``.

    Rows are grouped per feeder within runs of equal delivery order, so a batch never reorders
    a meter's readings, and a feeder's batch is capped at ``max_readings`` to stay well under
    Kafka's message size limit.
    """
    if frame.empty:
        return
    now_ms = int(time.time() * 1000)
    records = list(reading_records(frame))
    feeders = frame["feeder_id"].to_numpy()
    ts = frame["timestamp"].dt.as_unit("ms").astype("int64").to_numpy()
    # A new upload starts whenever the interval timestamp changes: one upload per feeder per interval.
    boundaries = np.flatnonzero(np.diff(ts) != 0) + 1
    start = 0
    for end in [*boundaries.tolist(), len(records)]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for i in range(start, end):
            groups.setdefault(feeders[i], []).append(records[i])
        for feeder, readings in groups.items():
            for chunk_start in range(0, len(readings), max_readings):
                chunk = readings[chunk_start:chunk_start + max_readings]
                yield {
                    "batch_id": f"{feeder}-{chunk[0]['timestamp']}-{chunk_start}",
                    "feeder_id": feeder,
                    "head_end_id": head_end_id,
                    "uploaded_at": now_ms,
                    "readings": chunk,
                }
        start = end
