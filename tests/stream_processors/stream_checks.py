"""What the stream tests read back from the broker: anomalies, consumer lag, the workers' state.

Shared by the quality, recovery and failover tests, which all judge a worker from the outside,
by what it left in Kafka, the way an operator would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, TopicPartition

from detection.meter_state import MeterStateStore
from schemas.serde import SingleObjectSerde
from stream_processors.feeder_state import FeederState


def _reader(kafka) -> Consumer:
    return Consumer({**kafka.connection.confluent_config(), "group.id": f"t-{os.urandom(4).hex()}",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})


def read_topic(kafka, topic: str, timeout: float = 60.0) -> list:
    """Every record of ``topic`` written before the call: each partition read up to its end offset."""
    consumer = _reader(kafka)
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        left = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in left])
        messages, deadline = [], time.monotonic() + timeout
        while left:
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(left)} not read to their end"
            for m in consumer.consume(1000, timeout=0.5):
                if m.error() is not None or m.partition() not in left:
                    continue
                if m.offset() < ends[m.partition()][1]:
                    messages.append(m)
                if m.offset() >= ends[m.partition()][1] - 1:
                    left.discard(m.partition())
        return messages
    finally:
        consumer.close()


def end_offsets(kafka, topics: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> end offset of every partition of ``topics`` that holds records: where an
    ingest that stored everything has its stored offsets (it keeps none for an empty partition)."""
    consumer = _reader(kafka)
    try:
        ends = {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for t in topics for p in consumer.list_topics(t, timeout=10).topics[t].partitions}
    finally:
        consumer.close()
    return {key: end for key, end in ends.items() if end > 0}


def read_anomalies(kafka, topic: str) -> pd.DataFrame:
    serde = SingleObjectSerde()
    frame = pd.DataFrame([serde.decode(m.value(), raw_timestamps=True)[1] for m in read_topic(kafka, topic)])
    if not frame.empty:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
    return frame


def read_incidents(kafka, topic: str) -> list[dict]:
    """Every incident record on ``topic``, in each partition's order; each keyed by its incident id."""
    from schemas.serde import INCIDENT

    serde = SingleObjectSerde()
    records = []
    for m in read_topic(kafka, topic):
        name, record = serde.decode(m.value(), raw_timestamps=True)
        assert name == INCIDENT
        assert m.key().decode() == record["incident_id"]
        records.append(record)
    return records


def flags_for(readings: pd.DataFrame, anomalies: pd.DataFrame) -> np.ndarray:
    """For each reading: did the stream flag it?"""
    keys = pd.MultiIndex.from_frame(anomalies[["meter_id", "timestamp"]])
    return pd.MultiIndex.from_frame(readings[["meter_id", "timestamp"]]).isin(keys)


@contextmanager
def _group_offsets(kafka, group: str, topic: str) -> Iterator[tuple[Consumer, list[TopicPartition]]]:
    """A consumer of ``group`` (never committing) and the group's committed offset of each partition of
    ``topic`` (OFFSET_INVALID, below 0, for a partition it never committed)."""
    consumer = Consumer({**kafka.connection.confluent_config(), "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
        yield consumer, consumer.committed(partitions, timeout=10)
    finally:
        consumer.close()


def committed_messages(kafka, group: str, topic: str) -> int:
    """Messages of ``topic`` that ``group`` has committed, over all partitions (the topic has no
    transaction markers, so a partition's committed offset counts its committed messages)."""
    with _group_offsets(kafka, group, topic) as (_, committed):
        return sum(max(tp.offset, 0) for tp in committed)


def consumer_lag_is_zero(kafka, group: str, topic: str) -> bool:
    """True when ``group`` has committed every record of ``topic``."""
    with _group_offsets(kafka, group, topic) as (consumer, committed):
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            # a partition nobody wrote to has no committed offset (OFFSET_INVALID) and nothing to read
            position = tp.offset if tp.offset >= 0 else low
            if position < high:
                return False
        return True


def wait_for_zero_lag(kafka, group: str, topic: str, worker, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if consumer_lag_is_zero(kafka, group, topic):
            return
        assert worker.process.poll() is None, f"worker exited: {worker.log_path.read_text()[-3000:]}"
        time.sleep(1.0)
    raise AssertionError(f"group {group} did not catch up on {topic} within {timeout:.0f} s; worker log:\n"
                         f"{worker.log_path.read_text()[-3000:]}")


def changelog_meter_state(kafka, app_id: str) -> dict[str, dict[str, np.ndarray]]:
    """Each meter's state as the workers left it in the feeder-state changelog (newest per key),
    loaded the way a worker restarted on those partitions would load it.

    Comparing it with an uninterrupted run shows whether every reading was applied exactly once.
    """
    latest: dict[bytes, bytes] = {}
    for message in read_topic(kafka, f"{app_id}-feeder-state-changelog"):
        if message.value() is not None:
            latest[message.key()] = message.value()
    recovered = FeederState(MeterStateStore())
    recovered.table = latest
    for key in list(latest):  # loading takes a feeder's records out of the table
        if key.endswith(b"|fast"):
            recovered.load(key.decode().split("|")[0])
    return reference_meter_state(recovered.store)


def reference_meter_state(store: MeterStateStore) -> dict[str, dict[str, np.ndarray]]:
    """Every meter's state in a store (e.g. an uninterrupted engine's), by meter."""
    meters = list(store.index)
    arrays = store.export_rows(store.rows_for(meters))
    return {meter: {name: values[i] for name, values in arrays.items()} for i, meter in enumerate(meters)}


def wait_for_stable_group(kafka, group: str, members: int, timeout: float = 120.0) -> None:
    """Wait until ``group`` is Stable with ``members`` members (a rebalance has settled)."""
    from confluent_kafka import ConsumerGroupState, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka.connection.confluent_config())
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            description = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
        except KafkaException as exc:  # the group may not exist yet
            seen = exc
            time.sleep(0.5)
            continue
        seen = (description.state, len(description.members))
        if description.state == ConsumerGroupState.STABLE and len(description.members) == members:
            return
        time.sleep(0.5)
    raise AssertionError(f"group {group} did not settle with {members} members (last seen: {seen})")
