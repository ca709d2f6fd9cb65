"""Consumer-group lag per partition, read with the Kafka admin API.

Lag is the partition's end offset (the next offset a producer will write) minus the offset the
group has committed: how many records the group still has to process. It is computed when
Prometheus scrapes, so it is never older than the scrape, and nothing is polled between scrapes.
Only partitions a group has committed appear for that group; end offsets are reported for every
partition of the project's topics and of any topic a group has committed on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(self.end - self.committed, 0)


@dataclass(frozen=True)
class LagSnapshot:
    lags: list[PartitionLag]
    end_offsets: dict[tuple[str, int], int]
    """(topic, partition) -> end offset."""


class LagReader:
    """Reads committed offsets of consumer groups and the end offsets of their partitions."""

    def __init__(self, admin: AdminClient, groups: Iterable[str] = (), topics: Iterable[str] = (),
                 timeout: float = 10.0) -> None:
        self.admin = admin
        self.groups = list(groups)
        self.topics = list(topics)
        self.timeout = timeout

    def group_names(self) -> list[str]:
        if self.groups:
            return self.groups
        result = self.admin.list_consumer_groups(request_timeout=self.timeout).result()
        return sorted(g.group_id for g in result.valid)

    def committed(self, groups: list[str]) -> dict[str, list[TopicPartition]]:
        """Committed offsets per group (one request per group: the admin API takes one at a time)."""
        committed: dict[str, list[TopicPartition]] = {}
        for group in groups:
            futures = self.admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                             request_timeout=self.timeout)
            for name, future in futures.items():
                partitions = future.result().topic_partitions or []
                committed[name] = [tp for tp in partitions if tp.error is None and tp.offset >= 0]
        return committed

    def partitions_of(self, topics: Iterable[str]) -> list[tuple[str, int]]:
        md = self.admin.list_topics(timeout=self.timeout)
        return [(t, p) for t in sorted(set(topics)) if t in md.topics and md.topics[t].error is None
                for p in sorted(md.topics[t].partitions)]

    def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
        if not request:
            return {}
        ends: dict[tuple[str, int], int] = {}
        for tp, future in self.admin.list_offsets(request, request_timeout=self.timeout).items():
            ends[(tp.topic, tp.partition)] = future.result().offset
        return ends

    def snapshot(self) -> LagSnapshot:
        committed = self.committed(self.group_names())
        group_topics = {tp.topic for tps in committed.values() for tp in tps}
        ends = self.end_offsets(self.partitions_of([*self.topics, *group_topics]))
        lags = [
            PartitionLag(group, tp.topic, tp.partition, tp.offset, ends[(tp.topic, tp.partition)])
            for group, tps in sorted(committed.items()) for tp in tps if (tp.topic, tp.partition) in ends
        ]
        return LagSnapshot(lags, ends)


def lag_rows(snapshot: LagSnapshot) -> Iterator[tuple[str, str, str, int]]:
    """(group, topic, partition, lag) rows, partition as a label string."""
    for item in snapshot.lags:
        yield item.group, item.topic, str(item.partition), item.lag
