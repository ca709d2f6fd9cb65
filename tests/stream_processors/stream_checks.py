"""What the stream tests read back from the broker: anomalies, consumer lag, the workers' state.

Shared by the quality, recovery and failover tests, which all judge a worker from the outside,
by what it left in Kafka, the way an operator would.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, TopicPartition

from schemas.serde import SingleObjectSerde
from detection.meter_state import MeterStateStore
from detection.state_codec import decode_state


def _reader(kafka) -> Consumer:
    return Consumer({**kafka.connection.confluent_config(), "group.id": f"t-{os.urandom(4).hex()}",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})


def read_topic(kafka, topic: str, settle: float = 3.0) -> list:
    """Every record of ``topic``, reading until nothing arrived for ``settle`` seconds."""
    consumer = _reader(kafka)
    consumer.subscribe([topic])
    messages, quiet_since = [], time.monotonic()
    while time.monotonic() - quiet_since < settle:
        batch = [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        if batch:
            quiet_since = time.monotonic()
        messages += batch
    consumer.close()
    return messages


def read_anomalies(kafka, topic: str, settle: float = 3.0) -> pd.DataFrame:
    serde = SingleObjectSerde()
    frame = pd.DataFrame([serde.decode(m.value(), raw_timestamps=True)[1] for m in read_topic(kafka, topic, settle)])
    if not frame.empty:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="ms", utc=True)
    return frame


def flags_for(readings: pd.DataFrame, anomalies: pd.DataFrame) -> np.ndarray:
    """For each reading: did the stream flag it?"""
    keys = pd.MultiIndex.from_frame(anomalies[["meter_id", "timestamp"]])
    return pd.MultiIndex.from_frame(readings[["meter_id", "timestamp"]]).isin(keys)


def consumer_lag_is_zero(kafka, group: str, topic: str) -> bool:
    """True when ``group`` has committed every record of ``topic``."""
    consumer = Consumer({**kafka.connection.confluent_config(), "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
        for tp in consumer.committed(partitions, timeout=10):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            # a partition nobody wrote to has no committed offset (OFFSET_INVALID) and nothing to read
            position = tp.offset if tp.offset >= 0 else low
            if position < high:
                return False
        return True
    finally:
        consumer.close()


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
    """Each meter's state as the workers left it in the feeder-state changelog (newest per key).

    This is what a worker restarted on those partitions would recover, so comparing it with an
    uninterrupted run shows whether every reading was applied exactly once.
    """
    latest: dict[bytes, bytes] = {}
    for message in read_topic(kafka, f"{app_id}-feeder-state-changelog"):
        if message.key().endswith(b"|fast") and message.value() is not None:
            latest[message.key()] = message.value()
    state: dict[str, dict[str, np.ndarray]] = {}
    for blob in latest.values():
        header, arrays = decode_state(blob)
        for i, meter in enumerate(header["meters"]):
            state[meter] = {name: values[i] for name, values in arrays.items()}
    return state


def reference_meter_state(store: MeterStateStore) -> dict[str, dict[str, np.ndarray]]:
    """The same per-meter view of an in-process store (e.g. an uninterrupted engine's)."""
    rows = store.rows_for(store.meter_ids)
    fields = ("last_ts", "scalars", "window", "window_expected", "seen")
    return {meter: {name: getattr(store, name)[row] for name in fields}
            for meter, row in zip(store.meter_ids, rows.tolist())}


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
