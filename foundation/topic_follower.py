"""Following a small compacted topic from its beginning, in a thread, for as long as a service runs.

The control topic (sensitivity) and the feedback topic are read this way: every reader reads the
whole topic with an unassigned (group-less) consumer, so each knows every record whatever
partitions it owns, and picks up a new one within a poll interval. The follower never gives up:
when the broker is away it keeps what it applied, tries again with backoff
(:func:`foundation.kafka_logging.retry_wait`: 1 s doubling to 30 s), re-reads the topic once it
is back, and logs the outage in a few lines.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from foundation.kafka_logging import RateLimitedLog, retry_wait

log = logging.getLogger(__name__)


class CompactedTopicFollower:
    """Hands every record of ``topic`` (from the beginning, then as they come) to :meth:`handle`."""

    def __init__(self, consumer_config: dict[str, Any], topic: str, *, poll_seconds: float, name: str,
                 what: str, keeping: str) -> None:
        """``name`` names the thread and the log kind; ``what`` and ``keeping`` say in the log what is
        followed ("the sensitivity topic") and what is kept meanwhile ("the last known settings")."""
        self._conf = consumer_config
        self._topic = topic
        self._poll = poll_seconds
        self._name = name
        self._what = what
        self._keeping = keeping
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._say = RateLimitedLog(log)
        self.following = threading.Event()
        """Set while the topic is assigned and read."""

    def handle(self, key: bytes, value: bytes | None) -> None:
        """One record (``value`` None: a tombstone)."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
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
                self._say.warning(self._name, "cannot follow %s %s (%s); keeping %s and trying again "
                                              "(attempt %d, next in %.0f s)",
                                  self._what, self._topic, exc, self._keeping, attempt, wait)
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
            self._say.recovered(self._name, "following %s %s", self._what, self._topic)
            while not self._stop.is_set():
                for msg in consumer.consume(500, timeout=self._poll):
                    if msg.error() is None and msg.key() is not None:
                        self.handle(msg.key(), msg.value())
                    elif msg.error() is not None and msg.error().fatal():
                        raise RuntimeError(str(msg.error()))
        finally:
            consumer.close()
