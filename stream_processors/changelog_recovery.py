"""The worker reads its own state back from the changelogs, for exactly the partitions it takes over.

Faust's table recovery replays every assigned changelog partition after each rebalance, the ones a
worker kept included, and around a rebalance Faust can drop changelog records it has already
fetched, as it drops readings (:mod:`stream_processors.offset_gaps`). A dropped record is either a
recovery that never ends (Faust waits for an offset that never comes again; seen in the recovery
tests) or, worse, one that ends without a feeder's newest record, so the worker goes on from an
older state (what a CI failure of the join test looked like: the kept partitions' state was
behind). So the worker keeps no Faust tables:

* :class:`Ownership` follows the consumer group's assignments and knows which readings partitions
  the worker has owned without a break since it last read their state. A partition kept through a
  rebalance is not read again: no other worker wrote to it, and the decoded state is current.
* Before a batch, the agent forgets the feeders of every partition it did not own throughout, and
  :class:`ChangelogReader` reads the state and forecast changelogs of the partitions it now owns
  anew, from their start to their end, with its own consumer; it ends only at each partition's end,
  so a recovery never stops short of a feeder's newest record.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from foundation.kafka_logging import quiet_config
from foundation.kafka_settings import KafkaConnection
from foundation.topics import TopicSpec, compacted_config
from stream_processors.emitted_anomalies import ReadBackUnavailable

log = logging.getLogger(__name__)

STATE_CHANGELOG = "{app_id}-feeder-state-changelog"
"""Per-feeder detector state (the names Faust gave these topics when it kept them, so a worker of
an earlier version finds its state)."""
FORECAST_CHANGELOG = "{app_id}-feeder-forecasts-changelog"
"""The latest forecasts of each feeder's meters."""

READ_BATCH = 10_000
"""Records taken from the consumer per call: large, since recovery reads whole partitions."""


def changelog_specs(app_id: str, partitions: int, min_insync_replicas: int) -> list[TopicSpec]:
    """The worker's two changelog topics: compacted (only each key's newest record matters), and
    partitioned like the readings, so a feeder's state is in its readings' partition."""
    return [TopicSpec(STATE_CHANGELOG.format(app_id=app_id), partitions, compacted_config(min_insync_replicas),
                      "stream worker state per feeder (compacted)"),
            TopicSpec(FORECAST_CHANGELOG.format(app_id=app_id), partitions, compacted_config(min_insync_replicas),
                      "stream worker's latest forecasts per feeder (compacted)")]


class ChangelogUnavailable(ReadBackUnavailable):
    """A changelog could not be read to its end (the broker is away, or nothing came for the reader's
    timeout): try again later. Never answered with part of a partition."""


class ChangelogReader:
    """Reads changelog partitions whole: each key's newest record, as of the end offsets when asked."""

    def __init__(self, connection: KafkaConnection, timeout: float = 120.0) -> None:
        self.connection = connection
        self.timeout = timeout
        """Seconds a read may go without a record before it gives up (the agent then tries again)."""

    def read(self, topic: str, partitions: Iterable[int]) -> dict[bytes, bytes]:
        """Each key's newest value in ``partitions`` of ``topic``; a tombstone (no value) removes its key."""
        consumer = Consumer({**self.connection.confluent_config(),
                             "group.id": f"wattsup-recovery-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                             "enable.partition.eof": True, **quiet_config("changelog-recovery")})
        try:
            return self._read(consumer, topic, sorted(set(partitions)))
        except KafkaException as exc:
            raise ChangelogUnavailable(f"cannot read {topic}: {exc}") from exc
        finally:
            consumer.close()

    def _read(self, consumer: Consumer, topic: str, partitions: list[int]) -> dict[bytes, bytes]:
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout, cached=False)
            if high > low:
                ends[p] = high
        newest: dict[bytes, bytes] = {}
        if not ends:
            return newest
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        left, deadline = dict(ends), time.monotonic() + self.timeout
        while left:
            if time.monotonic() > deadline:
                raise ChangelogUnavailable(f"reading {topic} partitions {sorted(left)}: nothing came for "
                                           f"{self.timeout:.0f} s")
            batch = consumer.consume(READ_BATCH, timeout=0.5)
            if batch:  # the timeout bounds a wait without progress, not a large read
                deadline = time.monotonic() + self.timeout
            for msg in batch:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:  # read to the end, which is past ``ends``
                        left.pop(msg.partition(), None)
                        continue
                    raise ChangelogUnavailable(f"reading {topic}[{msg.partition()}]: {error}")
                key, value = msg.key(), msg.value()
                if value is None:
                    newest.pop(key, None)
                else:
                    newest[key] = value
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    left.pop(msg.partition(), None)
        return newest


@dataclass
class TakeOver:
    """What a worker must do before its next batch: forget the feeders of every partition not in
    ``kept``, and read the state of ``new`` (owned now, not owned throughout before)."""

    generation: int
    owned: frozenset[int]
    kept: frozenset[int]
    new: frozenset[int]


@dataclass
class Ownership:
    """Which readings partitions the worker owns, and which of them it has owned without a break
    since it last read their state (see the module docstring)."""

    current: set[int] = field(default_factory=set)
    """Partitions whose state the worker holds, owned throughout since it was read."""
    assigned: frozenset[int] = frozenset()
    generation: int | None = None
    settled: bool = True
    """Whether the last assignment's take-over is done."""

    def on_assignment(self, partitions: Iterable[int], generation: int) -> None:
        """Note a new assignment (every one: the consumer's ``on_partitions_assigned``).

        A partition still owned stays current only if this assignment directly follows the last
        one the worker had: after a gap in generations (the worker was out of the group for a
        while) another worker may have owned and written any of them."""
        partitions = frozenset(partitions)
        if generation == self.generation:
            return  # told twice (the signal and the agent's own look): the same assignment
        if self.generation is None or generation != self.generation + 1:
            self.current.clear()
        self.current &= partitions
        self.assigned, self.generation, self.settled = partitions, generation, False

    def take_over(self) -> TakeOver | None:
        """What to do before the next batch, or None when the last assignment's take-over is done."""
        if self.settled or self.generation is None:
            return None
        return TakeOver(self.generation, self.assigned, frozenset(self.current), self.assigned - self.current)

    def taken_over(self, done: TakeOver) -> None:
        """The take-over is done: its partitions are current, unless a newer assignment came meanwhile."""
        if done.generation == self.generation:
            self.current, self.settled = set(done.owned), True
