"""Consumer-group lag per partition, read from Kafka when Prometheus scrapes.

Lag is the partition's end offset (the next offset a producer will write) minus the offset the
group has committed: how many records the group still has to process. It is computed when
Prometheus scrapes, so it is never older than the scrape, and nothing is polled between scrapes.
Lag and end offsets are reported for the partitions of the topics the exporter is given (the
project's topics); only partitions a group has committed on appear for that group. Groups and end
offsets come from the admin API, committed offsets from a consumer handle per group (see
``LagReader.committed`` for why).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from foundation.kafka_clients import worth_retrying
from foundation.kafka_logging import quiet_config

log = logging.getLogger(__name__)
T = TypeVar("T")



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

    def __init__(self, client_config: dict[str, Any], groups: Iterable[str] = (), topics: Iterable[str] = (),
                 timeout: float = 10.0) -> None:
        self.client_config = client_config
        # librdkafka's own lines through the throttle (quiet_config): a broker outage costs a few lines
        # whatever the scrape rate; they are handed over in serve_logs() at every scrape.
        self.admin = AdminClient({**client_config, **quiet_config("lag-admin")})
        self._consumers: dict[str, Consumer] = {}
        self.groups = list(groups)
        self.topics = list(topics)
        self.timeout = timeout

    def group_names(self) -> list[str]:
        if self.groups:
            return self.groups
        result = self.admin.list_consumer_groups(request_timeout=self.timeout).result()
        return sorted(g.group_id for g in result.valid)

    def committed(self, groups: list[str], partitions: list[tuple[str, int]]) -> dict[str, list[TopicPartition]]:
        """Committed offsets of each group on ``partitions`` (partitions without a commit are left out).

        Read with a consumer handle per group (``Consumer.committed`` never joins the group), not
        with ``AdminClient.list_consumer_group_offsets``: librdkafka's admin path crashes the
        process (SIGSEGV) when the group coordinator answers NOT_COORDINATOR, which a fresh or
        restarting cluster does (confluent-kafka-python issue 1982, reproduced here with 2.16.0
        against Kafka 4.4).
        """
        wanted = [TopicPartition(t, p) for t, p in partitions]
        for gone in set(self._consumers) - set(groups):  # a group deleted or expired: free its handle
            self._consumers.pop(gone).close()
        committed: dict[str, list[TopicPartition]] = {}
        for group in groups:
            if not wanted:
                committed[group] = []
                continue
            result = self._committed_with_retry(group, wanted)
            committed[group] = [tp for tp in result if tp.error is None and tp.offset >= 0]
        return committed

    def _committed_with_retry(self, group: str, wanted: list[TopicPartition]) -> list[TopicPartition]:
        return self._retrying(f"committed offsets of {group}", lambda remaining: self._consumer(group).committed(
            wanted, timeout=remaining))

    def _retrying(self, what: str, request: Callable[[float], T]) -> T:
        """A coordinator or partition leader that is moving or still loading (fresh topic, broker
        restart, lost broker) answers with a retriable error for a moment; retry until the request
        timeout instead of failing the scrape."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return request(max(deadline - time.monotonic(), 0.5))
            except KafkaException as exc:
                error = exc.args[0]
                if not worth_retrying(error) or time.monotonic() > deadline:
                    raise
                log.debug("%s: %s; retrying", what, error)
                time.sleep(0.2)

    def _consumer(self, group: str) -> Consumer:
        if group not in self._consumers:
            self._consumers[group] = Consumer({**self.client_config, "group.id": group,
                                               "enable.auto.commit": False, **quiet_config("lag-consumer")})
        return self._consumers[group]

    def serve_logs(self) -> None:
        """Hand the clients' queued log lines to Python logging (librdkafka forwards them on poll)."""
        self.admin.poll(0)
        for consumer in self._consumers.values():
            consumer.poll(0)

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()

    def partitions_of(self, topics: Iterable[str]) -> list[tuple[str, int]]:
        md = self.admin.list_topics(timeout=self.timeout)
        return [(t, p) for t in sorted(set(topics)) if t in md.topics and md.topics[t].error is None
                for p in sorted(md.topics[t].partitions)]

    def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
        if not request:
            return {}
        def read(remaining: float) -> dict[tuple[str, int], int]:
            futures = self.admin.list_offsets(request, request_timeout=remaining)
            return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}

        return self._retrying("end offsets", read)

    def snapshot(self) -> LagSnapshot:
        partitions = self.partitions_of(self.topics)
        committed = self.committed(self.group_names(), partitions)
        ends = self.end_offsets(partitions)
        lags = [
            PartitionLag(group, tp.topic, tp.partition, tp.offset, ends[(tp.topic, tp.partition)])
            for group, tps in sorted(committed.items()) for tp in tps if (tp.topic, tp.partition) in ends
        ]
        return LagSnapshot(lags, ends)
