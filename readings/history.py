"""Read a time range of readings back from the readings topic, for training and forecasting.

Kafka indexes records by their *message* timestamp (when they were produced), so the reader
seeks each partition with ``offsets_for_times`` to the first record produced at or after
``produced_since``, reads up to the end offsets captured when it started (a live topic does not
keep it reading forever), unpacks head-end batches, and keeps readings whose *reading*
timestamps fall in ``[since, until)`` when those are given.

A reader may be given some of the topic's partitions: a forecaster instance reads only those its
consumer group assigned it (a feeder's readings all live in its feeder's partition), and can ask
for the partition each reading came from.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pandas as pd
from confluent_kafka import Consumer, KafkaException, TopicPartition

from foundation.kafka_clients import consumer_config, worth_retrying
from foundation.kafka_logging import quiet_config
from foundation.kafka_settings import KafkaConnection
from foundation.timeutil import datetime_ms
from schemas.serde import METER_READING, METER_READING_BATCH, SerdeError, make_serde

log = logging.getLogger(__name__)


def read_readings(
    connection: KafkaConnection,
    topic: str,
    *,
    produced_since: datetime | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    partitions: Sequence[int] | None = None,
    with_partition: bool = False,
    timeout: float = 30.0,
) -> pd.DataFrame:
    """Readings as timestamp (UTC), meter_id, feeder_id, kwh, interval_seconds; undecodable records skipped.

    ``partitions``: read only these partitions of ``topic`` (default: all; one that does not exist is an
    error). ``with_partition``: add a ``partition`` column, the partition each reading was read from.
    """
    serde = make_serde(connection.schema_registry_url, **connection.registry_config())
    consumer = Consumer(consumer_config(connection, f"wattsup-history-{uuid.uuid4().hex[:8]}",
                                        **{"auto.offset.reset": "earliest", **quiet_config("history-consumer")}))
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise ValueError(f"topic {topic!r} does not exist on {connection.bootstrap_servers}")
        existing = sorted(md.topics[topic].partitions)
        if partitions is None:
            partitions = existing
        else:
            unknown = sorted(set(partitions) - set(existing))
            if unknown:
                raise ValueError(f"topic {topic!r} has no partitions {unknown} (it has {len(existing)})")
            partitions = sorted(set(partitions))
        start_ms = datetime_ms(produced_since) if produced_since else 0
        seeks = (consumer.offsets_for_times([TopicPartition(topic, p, start_ms) for p in partitions], timeout=timeout)
                 if partitions else [])  # an instance that owns no partition reads nothing
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in partitions}
        assignment = [tp for tp in seeks if tp.offset >= 0 and tp.offset < ends[tp.partition]]
        remaining = {tp.partition for tp in assignment}
        consumer.assign(assignment)
        lo = datetime_ms(since) if since else None
        hi = datetime_ms(until) if until else None
        rows: list[tuple] = []
        skipped = 0
        idle_since = time.monotonic()
        while remaining:
            # consume() waits for a full batch or the timeout: poll briefly, give up after `timeout` idle
            messages = consumer.consume(5000, timeout=0.2)
            if not messages:
                if time.monotonic() - idle_since > timeout:
                    raise TimeoutError(f"no records from {topic} for {timeout:.0f} s; "
                                       f"partitions left: {sorted(remaining)}")
                continue
            idle_since = time.monotonic()
            for msg in messages:
                if msg.error() is not None:
                    continue
                p = msg.partition()
                if p not in remaining:
                    continue
                if msg.offset() >= ends[p] - 1:
                    remaining.discard(p)
                if msg.offset() >= ends[p]:
                    continue
                try:
                    name, record = serde.decode(msg.value(), raw_timestamps=True)
                except SerdeError:
                    skipped += 1
                    continue
                readings = record["readings"] if name == METER_READING_BATCH else [record] if name == METER_READING else []
                for r in readings:
                    ts = r["timestamp"]
                    if (lo is None or ts >= lo) and (hi is None or ts < hi):
                        rows.append((ts, r["meter_id"], r["feeder_id"], r["energy_kwh"], r["interval_seconds"], p))
        if skipped:
            log.warning("skipped %d undecodable records of %s", skipped, topic)
    finally:
        consumer.close()
    frame = pd.DataFrame(rows, columns=["timestamp", "meter_id", "feeder_id", "kwh", "interval_seconds", "partition"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
    return frame if with_partition else frame.drop(columns="partition")


def days_ago(days: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=days)


def resume_point_ms(connection: KafkaConnection, topic: str, *, timeout: float = 30.0) -> int | None:
    """Where a restarted producer of ``topic`` continues: the newest reading timestamp (UTC ms) in the
    last record of each partition, the oldest of those; None if the topic holds no decodable reading.

    Producers send in delivery order, so the last record of a partition carries that partition's
    newest delivery slot. After a crash, other partitions may hold less (their sends were still in
    flight), so the oldest of the partitions' newest is the point before which everything is on the
    topic; what is sent again from there is recognised downstream as duplicates.
    """
    serde = make_serde(connection.schema_registry_url, **connection.registry_config())
    consumer = Consumer(consumer_config(connection, f"wattsup-newest-{uuid.uuid4().hex[:8]}",
                                        **quiet_config("history-consumer")))
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        if topic not in md.topics or md.topics[topic].error is not None:
            return None
        lasts = []
        deadline = time.monotonic() + timeout
        for p in md.topics[topic].partitions:
            while True:  # a topic created a moment ago has no leader yet: retriable, asked again
                try:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                    break
                except KafkaException as exc:
                    if not worth_retrying(exc.args[0]) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            if high > low:
                lasts.append(TopicPartition(topic, p, high - 1))
        if not lasts:
            return None
        consumer.assign(lasts)
        newest: dict[int, int] = {}
        waiting = {tp.partition for tp in lasts}
        while waiting and time.monotonic() < deadline:
            for msg in consumer.consume(len(lasts), timeout=0.5):
                if msg.error() is not None:
                    continue
                waiting.discard(msg.partition())
                try:
                    name, record = serde.decode(msg.value(), raw_timestamps=True)
                except SerdeError:
                    continue
                readings = record["readings"] if name == METER_READING_BATCH else [record] if name == METER_READING else []
                if readings:
                    newest[msg.partition()] = max(r["timestamp"] for r in readings)
        if waiting:
            raise TimeoutError(f"could not read the last record of {topic} partitions {sorted(waiting)}")
        return min(newest.values()) if newest else None
    finally:
        consumer.close()
