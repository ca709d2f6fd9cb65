"""Meter state per feeder in a changelog-backed table: what makes a restarted worker continue exactly.

Table layout, per feeder (every key starts with the feeder id, so it lands in the feeder's
partition, see :class:`stream_processors.app.FeederKeyedTable`):

* ``F0001|fast``: the feeder's meter ids and each meter's small state (last reading, run
  counters, slow averages, recent window, remembered timestamps), and the baseline slots the
  batch changed, as they were after it;
* ``F0001|h<slot>`` and ``F0001|d<slot>``: one hour-of-week / hour-of-day slot's baseline for
  all the feeder's meters. A head-end message covers one interval, so it touches one slot of
  each kind: a batch writes a few kilobytes per feeder, not the whole 168-slot baseline.

A batch's records are not written atomically, and a worker can die between two of them. So the
``fast`` record goes first and carries the batch's changed slots too (a redo log): records of
one feeder share a partition, which keeps them in order, so a slot record in the changelog means
the ``fast`` record of its batch is there as well, and loading overlays that record's slots on
the slot records. The recovered state is then exactly the state after some batch, never a mix
of two (which would apply a batch's readings to a baseline twice).

The ``fast`` record's header also carries the feeder's open incidents (``incidents``, written and
loaded through :attr:`FeederState.incidents`), so a recovered state's incidents belong to exactly the
readings that state has seen.

The decoded state lives in a :class:`~detection.meter_state.MeterStateStore`; a feeder is
(re)loaded from the table only when the table holds a ``fast`` value other than the one this
worker last wrote, which is exactly the case after changelog recovery or when a rebalance hands
a partition over.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from detection.calendar import HOD_SLOTS, HOW_SLOTS
from detection.meter_state import MeterStateStore
from detection.state_codec import decode_state, encode_state

FAST_ARRAYS = ("last_ts", "scalars", "window", "window_z", "seen")
"""Arrays of the ``fast`` record; the baselines go per slot."""


class FeederState:
    """Loads feeders' state from the table into the store, and writes back what a batch touched."""

    def __init__(self, store: MeterStateStore) -> None:
        self.store = store
        self.table: Any = None
        self.members: dict[str, list[str]] = {}
        """feeder -> its meters, in the order their state is stored."""
        self._member_sets: dict[str, set[str]] = {}
        self._rows: dict[str, np.ndarray] = {}
        """feeder -> store rows of ``members[feeder]``, for persisting without lookups."""
        self._written: dict[str, bytes] = {}
        self.incidents: Any = None
        """Kept with the feeder's state when set: ``export_feeder(feeder) -> list`` and
        ``import_feeder(feeder, list)`` (:class:`stream_processors.incidents.StreamIncidents`)."""

    def load(self, feeder: str) -> dict[str, Any] | None:
        """Load the feeder from the table if the table holds state this worker did not write;
        returns that state's header (with ``persisted_at``, epoch ms) when it did."""
        if self.table is None:
            return None
        blob = self.table.get(f"{feeder}|fast".encode())
        if blob is None or blob is self._written.get(feeder):
            return None
        header, fast = decode_state(blob)
        meters: list[str] = header["meters"]
        arrays = {name: fast[name] for name in FAST_ARRAYS}
        arrays["how"] = np.zeros((len(meters), *self.store.how.shape[1:]), dtype=np.float32)
        arrays["hod"] = np.zeros((len(meters), *self.store.hod.shape[1:]), dtype=np.float32)
        for kind, name, slots in (("h", "how", HOW_SLOTS), ("d", "hod", HOD_SLOTS)):
            target = arrays[name]
            for slot in range(slots):
                slot_blob = self.table.get(f"{feeder}|{kind}{slot}".encode())
                if slot_blob is not None:
                    values = decode_state(slot_blob)[1]["v"]
                    target[: len(values), slot] = values[: len(meters)]
            changed = header.get(f"{kind}_slots", [])
            if changed:  # the batch's own slots, as they were after it (see the module docstring)
                target[:, changed] = fast[f"{name}_changed"]
        self.store.import_rows(meters, arrays)
        if self.incidents is not None:
            self.incidents.import_feeder(feeder, header.get("incidents", []))
        self.members[feeder] = list(meters)
        self._member_sets[feeder] = set(meters)
        self._rows.pop(feeder, None)
        self._written[feeder] = blob
        return header

    def join(self, meter_ids: list[str], feeder_ids: list[str]) -> None:
        """Make each meter a member of its feeder's persisted state (a meter's first reading)."""
        for meter, feeder in zip(meter_ids, feeder_ids):
            members = self._member_sets.get(feeder)
            if members is None:
                members = self._member_sets[feeder] = set(self.members.setdefault(feeder, []))
            if meter not in members:
                members.add(meter)
                self.members[feeder].append(meter)

    def persist(self, touched: dict[str, tuple[set[int], set[int]]]) -> None:
        """Write each touched feeder's fast state and the baseline slots (hour of week, hour of day)
        the batch changed."""
        if self.table is None:
            return
        store = self.store
        for feeder, (how_slots, hod_slots) in touched.items():
            meters = self.members[feeder]
            rows = self._rows.get(feeder)
            if rows is None or len(rows) != len(meters):  # store rows never move; members only grow
                rows = self._rows[feeder] = store.rows_for(meters)
            how, hod = sorted(how_slots), sorted(hod_slots)
            fast = {name: getattr(store, name)[rows] for name in FAST_ARRAYS}
            fast["how_changed"] = store.how[rows[:, None], how]
            fast["hod_changed"] = store.hod[rows[:, None], hod]
            header = {"meters": meters, "persisted_at": int(time.time() * 1000), "h_slots": how, "d_slots": hod}
            if self.incidents is not None:
                header["incidents"] = self.incidents.export_feeder(feeder)
            blob = encode_state(header, fast)
            self.table[f"{feeder}|fast".encode()] = blob  # first: see the module docstring
            self._written[feeder] = blob
            for slot in how_slots:
                self.table[f"{feeder}|h{slot}".encode()] = encode_state({}, {"v": store.how[rows, slot]})
            for slot in hod_slots:
                self.table[f"{feeder}|d{slot}".encode()] = encode_state({}, {"v": store.hod[rows, slot]})
