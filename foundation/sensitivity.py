"""Runtime sensitivity: fleet-wide and per meter, changed without restarting any worker.

Settings live in the compacted control topic: key ``fleet`` or ``meter:<meter_id>``, value a
small JSON object ``{"sensitivity": 1.5, "updated_at": ...}`` (a null value removes a per-meter
override). Every stream worker (and the dashboard) reads the whole topic from the beginning with
an unassigned (group-less) consumer in a background thread, so each knows the fleet setting and
every override whatever partitions it owns, and picks changes up within a poll interval.

Sensitivity multiplies how readily a meter is flagged: 1.0 is the calibrated default, 2.0
flags more (thresholds lowered), 0.5 flags less.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from foundation.kafka_logging import RateLimitedLog, quiet_config, retry_wait
from foundation.kafka_settings import KafkaConnection, TopicNames

log = logging.getLogger(__name__)

FLEET_KEY = "fleet"
MIN_SENSITIVITY, MAX_SENSITIVITY = 0.1, 10.0


def control_key(meter_id: str | None) -> str:
    return FLEET_KEY if meter_id is None else f"meter:{meter_id}"


def validate_sensitivity(value: float) -> float:
    if not MIN_SENSITIVITY <= value <= MAX_SENSITIVITY:
        raise ValueError(f"sensitivity must be between {MIN_SENSITIVITY} and {MAX_SENSITIVITY}, got {value}")
    return float(value)


def control_record(value: float | None) -> bytes | None:
    """The control topic's value for a sensitivity (None, a tombstone, clears it)."""
    if value is None:
        return None
    return json.dumps({"sensitivity": validate_sensitivity(value), "updated_at": time.time()}).encode()


def publish_sensitivity(connection: KafkaConnection, topics: TopicNames, value: float | None,
                        meter_id: str | None = None, timeout: float = 30.0) -> bytes | None:
    """Set (or with ``value=None`` clear) the fleet-wide or one meter's sensitivity; raises
    :class:`KafkaException` if the broker has not acknowledged it within ``timeout`` seconds.
    Returns the record written."""
    payload = control_record(value)
    producer = Producer({**connection.confluent_config(), "enable.idempotence": True, "acks": "all",
                         "message.timeout.ms": max(1000, int(timeout * 1000)), **quiet_config("control-producer")})
    try:
        producer.produce(topics.control, key=control_key(meter_id).encode(), value=payload)
        left = producer.flush(timeout + 1.0)
    except BufferError as exc:
        raise KafkaException(f"could not queue the sensitivity for {topics.control}: {exc}") from exc
    finally:
        producer.purge()
    if left:
        raise KafkaException(f"Kafka did not acknowledge the sensitivity within {timeout:g} s ({topics.control})")
    return payload


class SensitivityWatcher:
    """Follows the control topic in a thread; :meth:`for_meter` is cheap and thread-safe.

    It never gives up: when the broker is away (at start or later) it keeps the last known
    settings, tries again with backoff (:func:`foundation.kafka_logging.retry_wait`: 1 s doubling to
    30 s), re-reads the compacted topic once it is back, and logs an outage in
    a few lines (:mod:`foundation.kafka_logging`).
    """

    def __init__(self, connection: KafkaConnection, topics: TopicNames, poll_seconds: float = 0.5, *,
                 on_update: Callable[[], None] | None = None, group_id: str = "wattsup-sensitivity-reader") -> None:
        """``on_update`` is called after each control record applied (e.g. to count it in a metric)."""
        self._conf: dict[str, Any] = {
            **connection.confluent_config(),
            "group.id": group_id,  # required by librdkafka; never committed
            "enable.auto.commit": False,
            **quiet_config("sensitivity-consumer"),
        }
        self._topic = topics.control
        self._poll = poll_seconds
        self.fleet = 1.0
        self.per_meter: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.updates_applied = 0
        self._on_update = on_update
        self._say = RateLimitedLog(log)
        self.following = threading.Event()
        """Set while the topic is assigned and read."""

    def for_meter(self, meter_id: str) -> float:
        return self.per_meter.get(meter_id, self.fleet)

    def apply(self, key: str, value: bytes | None) -> None:
        """Apply one control record (also used directly by tests and the batch engine)."""
        sensitivity = None
        if value is not None:
            try:
                sensitivity = validate_sensitivity(float(json.loads(value)["sensitivity"]))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring bad control record %s=%r: %s", key, value[:200], exc)
                return
        if key == FLEET_KEY:
            self.fleet = sensitivity if sensitivity is not None else 1.0
        elif key.startswith("meter:"):
            meter = key.removeprefix("meter:")
            if sensitivity is None:
                self.per_meter.pop(meter, None)
            else:
                self.per_meter[meter] = sensitivity
        self.updates_applied += 1
        if self._on_update is not None:
            self._on_update()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sensitivity-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._follow()
                return
            except Exception as exc:  # noqa: BLE001 - retried for as long as the service runs
                self.following.clear()
                attempt += 1
                wait = retry_wait(attempt)
                self._say.warning("control", "cannot follow the sensitivity topic %s (%s); keeping the last known "
                                             "settings and trying again (attempt %d, next in %.0f s)",
                                  self._topic, exc, attempt, wait)
                self._stop.wait(wait)

    def _follow(self) -> None:
        consumer = Consumer(self._conf)
        try:
            metadata = consumer.list_topics(self._topic, timeout=5)
            topic = metadata.topics.get(self._topic)
            if topic is None or topic.error is not None:
                raise RuntimeError(f"topic {self._topic} is not there")
            consumer.assign([TopicPartition(self._topic, p, 0) for p in topic.partitions])
            self.following.set()
            self._say.recovered("control", "following the sensitivity topic %s", self._topic)
            while not self._stop.is_set():
                for msg in consumer.consume(500, timeout=self._poll):
                    if msg.error() is None and msg.key() is not None:
                        self.apply(msg.key().decode(), msg.value())
                    elif msg.error() is not None and msg.error().fatal():
                        raise RuntimeError(str(msg.error()))
        finally:
            consumer.close()
