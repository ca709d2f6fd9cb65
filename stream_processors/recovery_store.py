"""The worker's Faust table store: a changelog's records held only until the worker takes them.

The worker keeps every feeder's state decoded (:class:`~detection.meter_state.MeterStateStore`)
and writes its changes straight to the changelog (:mod:`stream_processors.changelog_batch`). Faust's
in-memory store would keep a second, encoded copy of all of it for as long as the worker runs,
which is more memory per meter than the decoded state itself. This store holds what changelog
recovery reads back (after a start, a crash or a rebalance) until the worker takes a feeder's
records to decode them (:meth:`pop`), and nothing after: the decoded state is then the only copy,
and the changelog the durable one.

It is Faust's in-memory store otherwise, registered as the ``wattsup`` store through Faust's
``faust.stores`` plug-in point (pyproject.toml) and chosen per table with ``store="wattsup://"``.
A record's partition is its key's (``table.partition_for_key``, the feeder's), so the store keeps
no per-key partition index; records of partitions the worker no longer owns are dropped when a
recovery completes, as Faust's own store does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from faust.stores import memory
from faust.types import TP, EventT


class Store(memory.Store):
    """Faust's in-memory store, holding recovered records until they are taken; see the module docstring."""

    def apply_changelog_batch(self, batch: Iterable[EventT], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        """Keep each key's newest record of the batch; a tombstone (value None) removes the key."""
        data = self.data
        for event in batch:
            key = to_key(event.key)
            if event.message.value is None:
                data.pop(key, None)
            else:
                data[key] = to_value(event.value)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Drop what is held of partitions this worker is not active for (Faust's own rule)."""
        owned = {tp.partition for tp in active_tps}
        partition_of = self.table.partition_for_key
        for key in [k for k in self.data if partition_of(k) not in owned]:
            del self.data[key]
