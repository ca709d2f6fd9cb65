"""Create WattsUp's topics idempotently, with explicit partitions and configs.

readings, forecasts and control share one partition count (``TopicNames.partitions``): the
stream worker's tables are keyed like the readings, so a feeder's readings, its meters' state
and their forecasts meet in one partition only if those topics are co-partitioned.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from foundation.kafka_settings import KafkaConnection, TopicNames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    purpose: str


def compacted_config(min_insync_replicas: int) -> dict[str, str]:
    """A compacted topic's config: only each key's newest record is kept."""
    return {"cleanup.policy": "compact", "min.insync.replicas": str(min_insync_replicas)}


def topic_specs(topics: TopicNames, connection: KafkaConnection) -> list[TopicSpec]:
    isr = str(connection.min_insync_replicas)
    retention = str(topics.retention_ms)
    compacted = compacted_config(connection.min_insync_replicas)
    # latest value per key, read back by services at start: cleaned often so reading back stays short
    latest_values = {**compacted, "min.cleanable.dirty.ratio": "0.1", "segment.ms": str(3600 * 1000)}
    return [
        TopicSpec(topics.readings, topics.partitions,
                  {"retention.ms": retention, "min.insync.replicas": isr, "compression.type": "producer"},
                  "meter readings and head-end batches, keyed by feeder id"),
        TopicSpec(topics.forecasts, topics.partitions, dict(latest_values),
                  "latest forecast per meter (compacted), in the meter's feeder partition"),
        TopicSpec(topics.control, topics.partitions, dict(compacted),
                  "runtime sensitivity settings (compacted), fleet-wide and per meter"),
        TopicSpec(topics.anomalies, topics.partitions,
                  {"retention.ms": retention, "min.insync.replicas": isr},
                  "explained anomalies, keyed by meter id"),
        TopicSpec(topics.incidents, topics.partitions, dict(latest_values),
                  "incidents (compacted), keyed by incident id, in the meter's feeder partition"),
        TopicSpec(topics.feedback, topics.partitions, dict(compacted),
                  "operator feedback on incidents (compacted), keyed by meter id and incident"),
        TopicSpec(topics.dead_letters, 1,
                  {"retention.ms": str(30 * 24 * 3600 * 1000), "min.insync.replicas": isr},
                  "rejected records with the reason"),
    ]


def ensure_topics(connection: KafkaConnection, topics: TopicNames, timeout: float = 30.0) -> list[str]:
    """Create WattsUp's missing topics; returns the names created. Existing topics are left as they are."""
    return ensure_topic_specs(connection, topic_specs(topics, connection), timeout)


def ensure_topic_specs(connection: KafkaConnection, specs: list[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the missing topics of ``specs``; returns the names created. Existing topics are left as they are."""
    admin = AdminClient(connection.confluent_config())
    existing = admin.list_topics(timeout=timeout).topics
    wanted = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=connection.replication_factor, config=s.config)
        for s in specs
        if s.name not in existing
    ]
    created: list[str] = []
    if not wanted:
        return created
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != exc.args[0].TOPIC_ALREADY_EXISTS:
                raise
    wait_for_leaders(admin, created, timeout)
    for spec in specs:
        if spec.name in existing and len(existing[spec.name].partitions) != spec.partitions:
            log.warning("topic %s has %d partitions, WattsUp expects %d", spec.name,
                        len(existing[spec.name].partitions), spec.partitions)
    log.info("created topics: %s", ", ".join(created) or "none")
    return created


def wait_for_leaders(admin: AdminClient, names: list[str], timeout: float = 30.0) -> None:
    """Block until every partition of ``names`` has a leader: a new topic refuses reads and
    writes (NOT_LEADER_FOR_PARTITION) for a moment after CreateTopics returns."""
    deadline = time.monotonic() + timeout
    while names:
        md = admin.list_topics(timeout=timeout)
        pending = [
            n for n in names
            if n not in md.topics or md.topics[n].error is not None
            or any(p.leader < 0 or p.error is not None for p in md.topics[n].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without partition leaders after {timeout:.0f} s: {pending}")
        time.sleep(0.1)


def topic_offsets(connection: KafkaConnection, names: list[str], timeout: float = 10.0) -> dict[str, list[int]]:
    """End offset of every partition of each topic (what `wattsup broker status` shows growing)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**connection.confluent_config(), "group.id": "wattsup-status", "enable.auto.commit": False})
    try:
        md = consumer.list_topics(timeout=timeout)
        result: dict[str, list[int]] = {}
        for name in names:
            if name not in md.topics:
                continue
            offsets = []
            for p in sorted(md.topics[name].partitions):
                _low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)
                offsets.append(high)
            result[name] = offsets
        return result
    finally:
        consumer.close()
