"""Workaround for faust-streaming issue 596: Faust can skip fetched messages around a recovery.

After a crash, a takeover or changelog recovery, Faust sometimes discards messages it had
already fetched and goes on with later ones: a meter's readings would then be scored out of
order, and the skipped ones never. Two symptoms, two remedies, one class:

* in the agent, a message whose offset is beyond the next one expected for its partition
  means a gap: the rest of that partition's batch is held back and the partition is sought
  back to the first missing offset, so everything after it comes again, in order
  (:meth:`OffsetGapGuard.admit`, :meth:`OffsetGapGuard.rewind`); an offset that never comes
  (a transaction marker) is let go after :data:`MAX_REWINDS` tries;
* from a timer, a partition whose committed offset stays behind its fetch position while the
  agent processes nothing, and was not handed the messages up to that position, is stalled: it is
  sought back to the committed offset, with Faust's acknowledgement bookkeeping reset
  (:meth:`OffsetGapGuard.unstall`). Readings seen before are recognised as duplicates by the
  meter state. A commit that is merely behind (commits fail while the broker is away) or a batch
  in progress is not a stall.

Everything that touches Faust's private consumer internals is in :class:`FaustConsumer`, so
the day Faust fixes the issue, this module and two calls in the app go.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from stream_processors import metrics

log = logging.getLogger(__name__)

MAX_REWINDS = 3
"""Rewinds to one missing offset before it is taken as one that never comes (a transaction marker)."""


class ConsumerPort(Protocol):
    """What the guard needs of a consumer (Faust's, or a fake in tests)."""

    def assignment(self) -> set[Any]: ...

    async def seek(self, tp: Any, offset: int) -> None: ...

    async def committed(self, tp: Any) -> int | None: ...

    async def position(self, tp: Any) -> int | None: ...

    def restart_acks(self, tp: Any, committed: int) -> None: ...


class FaustConsumer:
    """:class:`ConsumerPort` over a Faust app's consumer, private internals included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def assignment(self) -> set[Any]:
        return self.app.consumer.assignment()

    async def seek(self, tp: Any, offset: int) -> None:
        await self.app.consumer.seek(tp, offset)

    async def committed(self, tp: Any) -> int | None:
        # from the broker: Faust only knows offsets this worker committed itself
        thread = self.app.consumer._thread  # Faust's consumer thread, which owns the aiokafka consumer
        return await thread.call_thread(thread._ensure_consumer().committed, tp)

    async def position(self, tp: Any) -> int | None:
        return await self.app.consumer._thread.position(tp)

    def restart_acks(self, tp: Any, committed: int) -> None:
        """Start the partition's ack bookkeeping afresh at ``committed``: acks left from before the
        gap would otherwise block every later commit (faust issue 625 upstream)."""
        consumer = self.app.consumer
        consumer._acked[tp].clear()
        consumer._acked_index[tp].clear()
        consumer._gap[tp].clear()
        consumer._committed_offset[tp] = committed


class OffsetGapGuard:
    """Keeps one topic's partitions in offset order for the agent; see the module docstring."""

    def __init__(self, topic: str, consumer: ConsumerPort) -> None:
        self.topic = topic
        self.consumer = consumer
        self.messages_seen = 0
        """Messages the agent has been handed: progress, as the stall check judges it."""
        self._generation: int | None = None
        self._next_offset: dict[int, int] = {}
        """partition -> the offset the agent must see next."""
        self._rewinds: dict[tuple[int, int], int] = {}
        self._gaps: dict[int, int] = {}
        """partition -> first missing offset, in the current batch."""
        self._stalled_at: dict[int, int] = {}
        self.in_batch = False
        """Whether the agent is inside a batch (:meth:`start_batch` to :meth:`end_batch`): a batch that
        takes long (reading state back, waiting for the registry) is not a stall."""

    def start_batch(self, generation: int) -> None:
        """Call before each batch with the consumer group generation: after a rebalance every
        partition starts anew."""
        self.in_batch = True
        if generation != self._generation:
            self._generation = generation
            self._next_offset.clear()
            self._rewinds.clear()
        self._gaps = {}

    def end_batch(self) -> None:
        """Call when a batch is done (or given up)."""
        self.in_batch = False

    def admit(self, partition: int, offset: int) -> bool:
        """Whether to process this message now; False holds it back until its partition is rewound."""
        self.messages_seen += 1
        if partition in self._gaps:
            return False
        expected = self._next_offset.get(partition)
        if expected is not None and offset > expected:
            tries = self._rewinds[(partition, expected)] = self._rewinds.get((partition, expected), 0) + 1
            if tries <= MAX_REWINDS:
                self._gaps[partition] = expected
                return False
            log.warning("partition %s of %s has no offset %s: going on from %s", partition, self.topic,
                        expected, offset)
        self._next_offset[partition] = max(expected or 0, offset + 1)
        return True

    async def rewind(self) -> None:
        """Seek the partitions with a gap in this batch back to their first missing message."""
        for partition, offset in self._gaps.items():
            tp = next((tp for tp in self.consumer.assignment() if tp.topic == self.topic and tp.partition == partition),
                      None)
            if tp is None:
                continue
            log.warning("partition %s of %s skipped from offset %s: seeking back", partition, self.topic, offset)
            metrics.PARTITION_RESEEKS.inc()
            await self.consumer.seek(tp, offset)
        self._gaps = {}

    async def unstall(self, active: bool = True) -> None:
        """Seek back partitions stalled since the previous call (call it every few seconds);
        ``active`` false (rebalancing, flow paused) or a batch in progress forgets what was seen."""
        if not active or self.in_batch:
            self._stalled_at.clear()
            return
        for tp in list(self.consumer.assignment()):
            if tp.topic != self.topic:
                continue
            committed = await self.consumer.committed(tp)
            position = await self.consumer.position(tp)
            log.debug("partition %s of %s: committed %s, fetched up to %s", tp.partition, self.topic, committed,
                      position)
            if self.in_batch:  # began while the broker was asked (which can take long in an outage)
                self._stalled_at.clear()
                return
            seen_up_to = self._next_offset.get(tp.partition)
            if (committed is None or position is None or position <= committed
                    or (seen_up_to is not None and seen_up_to >= position)):
                # nothing fetched beyond what the agent was handed: at most the commit is behind (it
                # fails while the broker is away), and seeking back would hand those readings over twice
                self._stalled_at.pop(tp.partition, None)
                continue
            # Faust's gap handling lets the committed offset creep, so progress is judged by what
            # the agent processed, not by the committed offset.
            if self._stalled_at.get(tp.partition) != self.messages_seen:
                self._stalled_at[tp.partition] = self.messages_seen
                continue
            log.warning("partition %s of %s stalled at committed offset %s (fetched up to %s): seeking back",
                        tp.partition, self.topic, committed, position)
            metrics.PARTITION_RESEEKS.inc()
            self.consumer.restart_acks(tp, committed)
            await self.consumer.seek(tp, committed)
            self._stalled_at.pop(tp.partition, None)
