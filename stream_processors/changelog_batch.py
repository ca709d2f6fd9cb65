"""A Faust table written once per micro-batch: its changelog records sent together by librdkafka.

Setting a Faust table key sends one changelog record through Faust's producer buffer, which
stalls the agent whenever more than 100 records wait; a micro-batch of single-reading messages
from thousands of feeders writes thousands of records. :class:`BatchedTable` keeps Faust's table
as the place state is recovered into (Faust reads the changelog back into it on start-up and
rebalance, and standbys follow it), but routes the writes around Faust: a write is queued, and
:meth:`BatchedTable.flush` sends the batch's records to the changelog, each to the partition Faust
would have chosen, and returns once the broker has acknowledged all of them. A write does not go
into the table's local store: the writer keeps its state decoded, and a second, encoded copy
would cost more memory than the state itself (:mod:`stream_processors.recovery_store`); the local
store holds only recovered records, until the writer takes them (:meth:`BatchedTable.pop`).

The agent awaits the flush before it takes the next batch, so the state a batch wrote is durable
before Faust acknowledges (and later commits) the batch's messages: the same at-least-once
contract as Faust's own table writes, whose producer Faust flushes before committing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from stream_processors.durable_producer import DurableProducer, Record


class ChangelogTable(Protocol):
    """What :class:`BatchedTable` needs of a Faust table."""

    @property
    def data(self) -> Any: ...

    @property
    def changelog_topic(self) -> Any: ...

    def partition_for_key(self, key: Any) -> int | None: ...


class BatchedTable:
    """Writes to a Faust table's changelog, and the records recovered into its local store; see the
    module docstring."""

    def __init__(self, table: ChangelogTable, producer: DurableProducer) -> None:
        self.table = table
        self.producer = producer
        self._pending: list[tuple[bytes, bytes]] = []

    @property
    def _store(self) -> Any:
        return self.table.data  # Faust's local store: what recovery fills and what it serves

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        return self._store.get(key, default)

    def __getitem__(self, key: bytes) -> bytes:
        return self._store[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        """Queue a record for the changelog; the local store does not keep it."""
        self._pending.append((key, value))

    def pop(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """Take a recovered record out of the local store: the caller keeps it decoded from now on."""
        return self._store.pop(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __iter__(self) -> Iterator[bytes]:
        """The keys of recovered records not taken yet."""
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    @property
    def pending(self) -> int:
        """Records written since the last flush."""
        return len(self._pending)

    def records(self) -> list[Record]:
        """The pending writes as changelog records, in the order they were made (a feeder's records
        share a partition, so the broker keeps that order: see :mod:`stream_processors.feeder_state`)."""
        topic = self.table.changelog_topic.get_topic_name()
        partition_for = self.table.partition_for_key
        out: list[Record] = []
        for key, value in self._pending:
            partition = partition_for(key)
            out.append((topic, key, value, -1 if partition is None else partition))
        return out

    async def flush(self) -> None:
        """Send the pending writes to the changelog and wait until the broker acknowledged them all."""
        if not self._pending:
            return
        records = self.records()
        await self.producer.send_all(records, "state records")
        self._pending.clear()
