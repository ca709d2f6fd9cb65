"""A changelog-backed table written once per micro-batch: its records sent together by librdkafka.

The worker keeps every feeder's state decoded (:class:`~detection.meter_state.MeterStateStore`), so
the table is only the way to the changelog and back. A write is queued, and
:meth:`BatchedTable.flush` sends the batch's records to the changelog, each to its feeder's
partition, and returns once the broker has acknowledged all of them; nothing is kept locally (a
second, encoded copy would cost more memory than the state itself). What the worker reads back
when it takes partitions over (:mod:`stream_processors.changelog_recovery`) is held in
:attr:`BatchedTable.recovered` until the worker takes a feeder's records to decode them
(:meth:`BatchedTable.pop`). The agent awaits the flush before it takes the next batch, so the state
a batch wrote is durable before Faust acknowledges (and later commits) the batch's messages: the
at-least-once contract of Faust's own table writes, whose producer Faust flushes before committing.
"""

from __future__ import annotations

from collections.abc import Iterator

from schemas.partitioning import partition_for
from stream_processors.durable_producer import DurableProducer, Record


class BatchedTable:
    """Writes to a changelog, and the records read back from it until taken; see the module docstring."""

    def __init__(self, topic: str, partitions: int, producer: DurableProducer) -> None:
        self.topic = topic
        self.partitions = partitions
        self.producer = producer
        self.recovered: dict[bytes, bytes] = {}
        """Records read back from the changelog and not taken yet (newest per key)."""
        self._pending: list[tuple[bytes, bytes]] = []
        self._feeder_partitions: dict[str, int] = {}

    def partition_for_key(self, key: bytes | str) -> int:
        """The partition of a key's feeder (``F0001`` or ``F0001|suffix``): that of its readings, by
        Kafka's murmur2 (remembered per feeder: the hash is pure Python, and a batch writes several
        records per feeder)."""
        text = key.decode() if isinstance(key, bytes) else key
        feeder = text.split("|", 1)[0]
        partition = self._feeder_partitions.get(feeder)
        if partition is None:
            partition = self._feeder_partitions[feeder] = partition_for(feeder, self.partitions)
        return partition

    def keep_recovered(self, partitions: frozenset[int] | set[int]) -> None:
        """Drop the records read back for feeders of other partitions (partitions the worker lost)."""
        for key in [k for k in self.recovered if self.partition_for_key(k) not in partitions]:
            del self.recovered[key]

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        return self.recovered.get(key, default)

    def __getitem__(self, key: bytes) -> bytes:
        return self.recovered[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        """Queue a record for the changelog; the table does not keep it."""
        self._pending.append((key, value))

    def pop(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """Take a record read back: the caller keeps it decoded from now on."""
        return self.recovered.pop(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.recovered

    def __iter__(self) -> Iterator[bytes]:
        """The keys of recovered records not taken yet."""
        return iter(self.recovered)

    def __len__(self) -> int:
        return len(self.recovered)

    @property
    def pending(self) -> int:
        """Records written since the last flush."""
        return len(self._pending)

    def records(self) -> list[Record]:
        """The pending writes as changelog records, in the order they were made (a feeder's records
        share a partition, so the broker keeps that order: see :mod:`stream_processors.feeder_state`)."""
        topic, partition_for_key = self.topic, self.partition_for_key
        return [(topic, key, value, partition_for_key(key)) for key, value in self._pending]

    async def flush(self) -> None:
        """Send the pending writes to the changelog and wait until the broker acknowledged them all."""
        if not self._pending:
            return
        records = self.records()
        await self.producer.send_all(records, "state records")
        self._pending.clear()
