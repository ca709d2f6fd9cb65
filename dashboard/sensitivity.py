"""The dashboard's view of the sensitivity settings: follows the control topic and never gives up.

The state and its rules (keys, validation) are :class:`foundation.sensitivity.SensitivityWatcher`'s,
used here without its thread; the following is the dashboard's own, because the stream workers'
watcher stops for good when the broker is unreachable for 30 s at start. This one waits with backoff,
re-reads the compacted topic after any error, and logs an outage in a few lines (kafka_clients).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from dashboard.kafka_clients import RateLimitedLog, quiet_config
from foundation.kafka_settings import KafkaConnection, TopicNames

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
"""How often a change on the control topic is looked for (the stream workers poll as often)."""
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 1.0, 30.0
"""Waits between attempts to reach the topic: doubling from the first to the most."""


class SensitivityFollower:
    """``fleet``, ``per_meter``, ``apply`` as the stream's watcher has them; :meth:`start`/:meth:`stop` the thread."""

    def __init__(self, connection: KafkaConnection, topics: TopicNames) -> None:
        from foundation.sensitivity import SensitivityWatcher

        self.state = SensitivityWatcher(connection, topics)  # never started: its state and apply() only
        self._conf: dict[str, Any] = {
            **connection.confluent_config(),
            "group.id": "wattsup-dashboard-sensitivity",  # required by librdkafka; never committed
            "enable.auto.commit": False,
            **quiet_config("sensitivity-consumer"),
        }
        self._topic = topics.control
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._say = RateLimitedLog(log)
        self.following = threading.Event()
        """Set while the topic is assigned and read."""

    @property
    def fleet(self) -> float:
        return self.state.fleet

    @property
    def per_meter(self) -> dict[str, float]:
        return self.state.per_meter

    def apply(self, key: str, value: bytes | None) -> None:
        self.state.apply(key, value)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-sensitivity", daemon=True)
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
                wait = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (attempt - 1))
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
                for msg in consumer.consume(500, timeout=POLL_SECONDS):
                    if msg.error() is None and msg.key() is not None:
                        self.state.apply(msg.key().decode(), msg.value())
                    elif msg.error() is not None and msg.error().fatal():
                        raise RuntimeError(str(msg.error()))
        finally:
            consumer.close()
