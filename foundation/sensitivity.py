"""Runtime sensitivity: fleet-wide and per meter, changed without restarting any worker.

Settings live in the compacted control topic: key ``fleet`` or ``meter:<meter_id>``, value a
small JSON object ``{"sensitivity": 1.5, "updated_at": ...}`` (a null value removes a per-meter
override). Every stream worker reads the whole topic from the beginning with an unassigned
(group-less) consumer in a background thread, so each worker knows the fleet setting and every
override whatever partitions it owns, and picks changes up within a poll interval.

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


def publish_sensitivity(
    connection: KafkaConnection, topics: TopicNames, value: float | None, meter_id: str | None = None
) -> None:
    """Set (or with ``value=None`` clear) the fleet-wide or one meter's sensitivity."""
    payload = None
    if value is not None:
        payload = json.dumps({"sensitivity": validate_sensitivity(value), "updated_at": time.time()}).encode()
    producer = Producer({**connection.confluent_config(), "enable.idempotence": True, "acks": "all"})
    producer.produce(topics.control, key=control_key(meter_id).encode(), value=payload)
    if producer.flush(30) != 0:
        raise KafkaException(f"could not write sensitivity to {topics.control}")


class SensitivityWatcher:
    """Follows the control topic in a thread; :meth:`for_meter` is cheap and thread-safe."""

    def __init__(self, connection: KafkaConnection, topics: TopicNames, poll_seconds: float = 0.5, *,
                 on_update: Callable[[], None] | None = None) -> None:
        """``on_update`` is called after each control record applied (e.g. to count it in a metric)."""
        self._conf: dict[str, Any] = {
            **connection.confluent_config(),
            "group.id": "wattsup-sensitivity-reader",  # required by librdkafka; never committed
            "enable.auto.commit": False,
        }
        self._topic = topics.control
        self._poll = poll_seconds
        self.fleet = 1.0
        self.per_meter: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.updates_applied = 0
        self._on_update = on_update

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
            self._thread.join(timeout=5)

    def _run(self) -> None:
        consumer = Consumer(self._conf)
        try:
            md = consumer.list_topics(self._topic, timeout=30)
            partitions = md.topics[self._topic].partitions if self._topic in md.topics else {}
            consumer.assign([TopicPartition(self._topic, p, 0) for p in partitions])
            while not self._stop.is_set():
                for msg in consumer.consume(500, timeout=self._poll):
                    if msg.error() is None and msg.key() is not None:
                        self.apply(msg.key().decode(), msg.value())
        except Exception:  # noqa: BLE001 - a dead watcher must be visible, not crash the worker
            log.exception("sensitivity watcher stopped; keeping the last known settings")
        finally:
            consumer.close()
