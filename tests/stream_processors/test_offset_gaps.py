"""The faust-streaming issue 596 workaround, against a consumer that behaves as Faust's did."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from stream_processors.offset_gaps import MAX_REWINDS, OffsetGapGuard


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class FakeConsumer:
    """Offsets as a broker would report them; records what the guard asked for."""

    partitions: set[TP]
    committed_at: dict[int, int] = field(default_factory=dict)
    position_at: dict[int, int] = field(default_factory=dict)
    seeks: list[tuple[int, int]] = field(default_factory=list)
    acks_restarted: list[tuple[int, int]] = field(default_factory=list)

    def assignment(self) -> set[TP]:
        return self.partitions

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp.partition, offset))

    async def committed(self, tp: TP) -> int | None:
        return self.committed_at.get(tp.partition)

    async def position(self, tp: TP) -> int | None:
        return self.position_at.get(tp.partition)

    def restart_acks(self, tp: TP, committed: int) -> None:
        self.acks_restarted.append((tp.partition, committed))


def guard() -> tuple[OffsetGapGuard, FakeConsumer]:
    consumer = FakeConsumer({TP("readings", 0), TP("readings", 1), TP("other", 0)})
    return OffsetGapGuard("readings", consumer), consumer


def test_a_skipped_offset_holds_the_partition_back_and_seeks_to_it():
    g, consumer = guard()
    g.start_batch(1)
    admitted = [g.admit(0, o) for o in (10, 11, 14, 15)] + [g.admit(1, 3)]
    assert admitted == [True, True, False, False, True]  # 12 and 13 never came
    asyncio.run(g.rewind())
    assert consumer.seeks == [(0, 12)]
    g.start_batch(1)  # the partition comes again from 12, in order
    assert [g.admit(0, o) for o in (12, 13, 14)] == [True, True, True]


def test_an_offset_that_never_comes_is_let_go_after_a_few_rewinds():
    g, _ = guard()
    g.start_batch(1)
    assert g.admit(0, 5)
    for _ in range(MAX_REWINDS):
        g.start_batch(1)
        assert not g.admit(0, 7)  # 6 is a transaction marker: it never arrives
    g.start_batch(1)
    assert g.admit(0, 7)


def test_a_rebalance_starts_every_partition_anew():
    g, _ = guard()
    g.start_batch(1)
    g.admit(0, 10)
    g.start_batch(2)  # new generation: the partition may have been elsewhere meanwhile
    assert g.admit(0, 50)


def test_a_partition_stalled_behind_its_fetch_position_is_sought_back_once():
    g, consumer = guard()
    consumer.committed_at = {0: 100, 1: 40}
    consumer.position_at = {0: 180, 1: 40}  # partition 1 is caught up
    asyncio.run(g.unstall())  # first look: remember the progress
    assert consumer.seeks == []
    asyncio.run(g.unstall())  # no message since: stalled
    assert consumer.seeks == [(0, 100)] and consumer.acks_restarted == [(0, 100)]


def test_progress_or_a_rebalance_is_not_a_stall():
    g, consumer = guard()
    consumer.committed_at, consumer.position_at = {0: 100}, {0: 180}
    asyncio.run(g.unstall())
    g.start_batch(1)
    g.admit(0, 100)  # the agent got a message: progress
    asyncio.run(g.unstall())
    asyncio.run(g.unstall(active=False))  # rebalancing: forget
    asyncio.run(g.unstall())
    assert consumer.seeks == []


def test_a_long_batch_is_not_a_stall():
    """A batch that reads state back or waits for the registry processes nothing for a while."""
    g, consumer = guard()
    consumer.committed_at, consumer.position_at = {0: 100}, {0: 180}
    g.start_batch(1)
    asyncio.run(g.unstall())
    asyncio.run(g.unstall())
    assert consumer.seeks == []
    g.end_batch()
    asyncio.run(g.unstall())
    asyncio.run(g.unstall())  # idle now, and still behind: stalled
    assert consumer.seeks == [(0, 100)]


def test_a_commit_behind_what_the_agent_was_handed_is_not_a_stall():
    """While the broker is away commits fail, so the committed offset stays behind readings the agent has
    scored; seeking back would hand them over twice."""
    g, consumer = guard()
    consumer.committed_at, consumer.position_at = {0: 100}, {0: 180}
    g.start_batch(1)
    for offset in range(100, 180):
        assert g.admit(0, offset)
    g.end_batch()
    asyncio.run(g.unstall())
    asyncio.run(g.unstall())
    assert consumer.seeks == []
