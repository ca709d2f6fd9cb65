"""Marks on the compacted feedback topic: publish one, read them all, follow them live.

The topic is small (one record per marked incident, or per kind of a meter, kept by compaction),
so every reader reads all of it from the beginning with a group-less consumer, like the control
topic (:mod:`foundation.sensitivity`): each stream worker knows every mark whatever partitions it
owns, and picks up a new one within a poll interval, without a restart.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from detection.feedback import FeedbackMark
from foundation.kafka_clients import producer_config
from foundation.kafka_logging import quiet_config
from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.topic_follower import CompactedTopicFollower
from schemas.serde import FEEDBACK_MARK, INCIDENT, SerdeError

log = logging.getLogger(__name__)


def mark_from_record(record: dict[str, Any]) -> FeedbackMark:
    return FeedbackMark(**{name: record.get(name) for name in FeedbackMark.__dataclass_fields__
                           if name in record})


def publish_mark(connection: KafkaConnection, topics: TopicNames, serde: Any, mark: FeedbackMark,
                 timeout: float = 30.0) -> None:
    """Write a mark and wait for the broker's acknowledgement; raises :class:`KafkaException` if
    it did not come within ``timeout`` seconds or the delivery failed.

    The delivery report decides, not what ``flush`` leaves queued: a message that expired
    (``message.timeout.ms``, e.g. no broker reachable) is reported failed and leaves the queue, so
    ``flush`` returns 0 for it as for a delivered one."""
    value = serde.encode(FEEDBACK_MARK, mark.record())
    producer = Producer(producer_config(connection, **{"linger.ms": 0, "message.timeout.ms": max(1000, int(timeout * 1000)),
                                                       **quiet_config("feedback-producer")}))
    reports: list[Any] = []  # the delivery report's error (None: acknowledged)
    try:
        producer.produce(topics.feedback, key=mark.key.encode(), value=value,
                         on_delivery=lambda err, _msg: reports.append(err))
        left = producer.flush(timeout + 1.0)
    except BufferError as exc:
        raise KafkaException(f"could not queue the mark for {topics.feedback}: {exc}") from exc
    finally:
        producer.purge()
    if left or not reports:
        raise KafkaException(f"Kafka did not acknowledge the mark within {timeout:g} s ({topics.feedback})")
    if reports[0] is not None:
        error = reports[0]
        reason = error.str() if hasattr(error, "str") else str(error)
        raise KafkaException(f"Kafka did not take the mark ({topics.feedback}): {reason}")


def _consumer_config(connection: KafkaConnection, name: str) -> dict[str, Any]:
    return {**connection.confluent_config(), "group.id": f"wattsup-feedback-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, **quiet_config(name)}


def _consumer(connection: KafkaConnection, name: str) -> Consumer:
    return Consumer(_consumer_config(connection, name))


def _decode(serde: Any, key: bytes, value: bytes | None) -> tuple[str, FeedbackMark | None] | None:
    """(key, mark) of a record, (key, None) for a tombstone, None for a record that is not a mark."""
    text = key.decode(errors="replace")
    if value is None:
        return text, None
    try:
        name, record = serde.decode(value, raw_timestamps=True)
        if name != FEEDBACK_MARK:
            return None
        return text, mark_from_record(record)
    except (SerdeError, ValueError, TypeError) as exc:
        log.warning("ignoring a feedback record that is not a valid mark (key %r): %s", text[:200], exc)
        return None


def _read_all(connection: KafkaConnection, topic_name: str, on_message: Callable[[Any], None],
              timeout: float) -> None:
    """Hand every message of a topic written before the call to ``on_message``, partition by partition in order."""
    consumer = _consumer(connection, "feedback-reader")
    try:
        metadata = consumer.list_topics(topic_name, timeout=timeout)
        topic = metadata.topics.get(topic_name)
        if topic is None or topic.error is not None:
            return
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic_name, p), timeout=timeout)
                for p in topic.partitions}
        wanted = {p: high for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic_name, p, ends[p][0]) for p in wanted])
        positions = {p: ends[p][0] for p in wanted}
        deadline = time.monotonic() + timeout
        while any(positions[p] < end for p, end in wanted.items()):
            if time.monotonic() > deadline:
                raise KafkaException(f"could not read {topic_name} to its end within {timeout:g} s")
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is not None or msg.partition() not in wanted or msg.offset() >= wanted[msg.partition()]:
                    continue
                positions[msg.partition()] = msg.offset() + 1
                on_message(msg)
    finally:
        consumer.close()


def read_marks(connection: KafkaConnection, topics: TopicNames, serde: Any, timeout: float = 30.0) -> list[FeedbackMark]:
    """Every mark on the topic now (the latest per key; tombstones remove theirs)."""
    latest: dict[str, FeedbackMark | None] = {}

    def note(msg: Any) -> None:
        if msg.key() is not None and (decoded := _decode(serde, msg.key(), msg.value())) is not None:
            latest[decoded[0]] = decoded[1]

    _read_all(connection, topics.feedback, note, timeout)
    return [m for m in latest.values() if m is not None]


def read_incidents(connection: KafkaConnection, topics: TopicNames, serde: Any,
                   timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """Every incident on the incidents topic now: its record of the highest revision, by incident id."""
    latest: dict[str, dict[str, Any]] = {}

    def note(msg: Any) -> None:
        if msg.value() is None:
            return
        try:
            name, record = serde.decode(msg.value(), raw_timestamps=True)
        except SerdeError:
            return
        if name == INCIDENT and record["revision"] > latest.get(record["incident_id"], {"revision": -1})["revision"]:
            latest[record["incident_id"]] = record

    _read_all(connection, topics.incidents, note, timeout)
    return latest


class FeedbackFollower(CompactedTopicFollower):
    """Follows the feedback topic in a thread and hands every mark (or tombstone) to ``on_mark``.

    Never gives up: when the broker is away it keeps what it applied and tries again (see
    :class:`foundation.topic_follower.CompactedTopicFollower`).
    """

    def __init__(self, connection: KafkaConnection, topics: TopicNames, serde: Any,
                 on_mark: Callable[[str, FeedbackMark | None], None], poll_seconds: float = 0.5) -> None:
        super().__init__(_consumer_config(connection, "feedback-consumer"), topics.feedback, poll_seconds=poll_seconds,
                         name="feedback-follower", what="the feedback topic", keeping="the marks applied")
        self._serde = serde
        self._on_mark = on_mark

    def handle(self, key: bytes, value: bytes | None) -> None:
        decoded = _decode(self._serde, key, value)
        if decoded is not None:
            self._on_mark(*decoded)
