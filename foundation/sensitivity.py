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
import time
from collections.abc import Callable

from confluent_kafka import KafkaException, Producer

from foundation.kafka_logging import quiet_config
from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.topic_follower import CompactedTopicFollower

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


class SensitivityWatcher(CompactedTopicFollower):
    """Follows the control topic in a thread; :meth:`for_meter` is cheap and thread-safe.

    It never gives up: when the broker is away (at start or later) it keeps the last known
    settings and tries again (see :class:`foundation.topic_follower.CompactedTopicFollower`).
    """

    def __init__(self, connection: KafkaConnection, topics: TopicNames, poll_seconds: float = 0.5, *,
                 on_update: Callable[[], None] | None = None, group_id: str = "wattsup-sensitivity-reader") -> None:
        """``on_update`` is called after each control record applied (e.g. to count it in a metric)."""
        super().__init__({
            **connection.confluent_config(),
            "group.id": group_id,  # required by librdkafka; never committed
            "enable.auto.commit": False,
            **quiet_config("sensitivity-consumer"),
        }, topics.control, poll_seconds=poll_seconds, name="sensitivity-watcher", what="the sensitivity topic",
            keeping="the last known settings")
        self.fleet = 1.0
        self.per_meter: dict[str, float] = {}
        self.updates_applied = 0
        self._on_update = on_update

    def for_meter(self, meter_id: str) -> float:
        return self.per_meter.get(meter_id, self.fleet)

    def handle(self, key: bytes, value: bytes | None) -> None:
        self.apply(key.decode(), value)

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
