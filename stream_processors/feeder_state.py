"""Meter state per feeder in a changelog-backed table: what makes a restarted worker continue exactly.

Table layout, per feeder (every key starts with the feeder id, so it lands in the feeder's
partition, see :meth:`stream_processors.changelog_batch.BatchedTable.partition_for_key`):

* ``F0001|fast``: the feeder's meter ids and each meter's small state (last reading, run
  counters, slow averages, recent window, remembered timestamps), and the baseline slots the
  batch changed, as they were after it;
* ``F0001|h<slot>`` and ``F0001|d<slot>``: one hour-of-week / hour-of-day slot's baseline for
  all the feeder's meters. A head-end message covers one interval, so it touches one slot of
  each kind: a batch writes a few kilobytes per feeder, not the whole 168-slot baseline;
* ``F0001|b``: instead of slot records, the whole baseline of a feeder of a few meters
  (:data:`WHOLE_BASELINE_BYTES`), whose slot records would be hundreds of tiny records. Loading lays
  slot records over it (a feeder that grew past a few meters writes slot records from then on).

A batch's records are not written atomically, and a worker can die between two of them. So the
``fast`` record goes first and carries the batch's changed slots too (a redo log): records of
one feeder share a partition, which keeps them in order, so a slot record in the changelog means
the ``fast`` record of its batch is there as well, and loading overlays that record's slots on
the slot records. The recovered state is then exactly the state after some batch, never a mix
of two (which would apply a batch's readings to a baseline twice).

A feeder of a few meters (one, when meters send their own readings) changes a few bytes of baseline per
batch: its changed slots stay in its ``fast`` record (its header's ``h_slots`` and ``d_slots``, every slot
changed since the slot records were last written) until they amount to :data:`SLOT_RECORDS_AFTER_BYTES`,
and only then go to their slot records, the ``fast`` record carrying them all first. A batch of such a
feeder writes one record, not three; a take-over keeps carrying the slots the record it loaded carried.

The ``fast`` record's header also carries the feeder's open incidents (``incidents``, written and
loaded through :attr:`FeederState.incidents`), so a recovered state's incidents belong to exactly the
readings that state has seen.

The decoded state lives in a :class:`~detection.meter_state.MeterStateStore`, and only there: the
table's writes go to the changelog, and the table holds a feeder's records only after the worker read
them back, taking its feeder's partition over (:mod:`stream_processors.changelog_recovery`). Loading
takes them out of it (``table.pop``) and loads the feeder from them. A worker that loses a partition
drops its feeders' decoded state (:meth:`FeederState.drop`); a partition it keeps is never read back,
so its own writes never come back to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from detection.calendar import HOD_SLOTS, HOW_SLOTS
from detection.meter_state import MeterStateStore
from detection.state_codec import STATE_FORMAT, decode_state

FAST_ARRAYS = ("last_ts", "scalars", "window", "window_z", "seen")
"""Arrays of the ``fast`` record; the baselines go per slot."""
SLOT_RECORDS_AFTER_BYTES = 2048
"""Baseline values (bytes) a feeder's ``fast`` record carries at most before they go to slot records.
Carrying saves two records a batch and costs the carried bytes in every record until they go, so they
are kept within a few times a one-meter feeder's own fast state (under a kilobyte): this limit is about
five days of an hourly one-meter feeder's slots (its hours of the day repeat within them, so they go to
fewer records than readings), more than a daily-read meter ever carries (its 7 slots repeat), and less
than one interval of a head-end feeder of 57 meters or more, which writes its slot records every batch."""


WHOLE_BASELINE_BYTES = 16 * 1024
"""A feeder whose whole baseline is at most this many bytes (five meters or fewer: 3,168 bytes each, float32)
writes it as one record (``F0001|b``) when its carried slots go out, instead of one record per slot. Slot
records suit a head-end feeder, whose batch changes one slot of many meters; a one-meter feeder's slot
records are 216 small records of about 60 bytes each, most of it key and header: measured with
bench/state_read_back.py, a week-old one-meter feeder had 147 records and 13.5 KB in the changelog, and a
worker taking it over read back 1,000 such meters a second. One record of at most a few times the carry
limit, written once per spill (every few days of readings), is what a take-over reads instead."""


class FeederState:
    """Loads feeders' state from the table into the store, and writes back what a batch touched."""

    def __init__(self, store: MeterStateStore, slot_records_after_bytes: int = SLOT_RECORDS_AFTER_BYTES,
                 whole_baseline_bytes: int = WHOLE_BASELINE_BYTES) -> None:
        self.store = store
        self.slot_records_after_bytes = slot_records_after_bytes
        self.whole_baseline_bytes = whole_baseline_bytes
        self._carried: dict[str, tuple[int, int]] = {}
        """feeder -> slots (hour of week, hour of day) changed since its slot records were written, as bit
        masks (a set of ints costs about a kilobyte, one per one-meter feeder): their values are only in
        its ``fast`` record."""
        self.table: Any = None
        self.members: dict[str, list[str]] = {}
        """feeder -> its meters, in the order their state is stored."""
        self._member_sets: dict[str, set[str]] = {}
        self._rows: dict[str, np.ndarray] = {}
        """feeder -> store rows of ``members[feeder]``, for persisting without lookups."""
        self.incidents: Any = None
        """Kept with the feeder's state when set: ``export_feeder(feeder) -> list`` and
        ``import_feeder(feeder, list)`` (:class:`stream_processors.incidents.StreamIncidents`)."""
        self._meters_text: dict[str, tuple[int, str]] = {}
        """feeder -> (member count, the members as JSON), for the record headers."""
        self._keeps_slot_records: set[str] = set()
        """Small feeders loaded with slot records (written before whole-baseline records existed): they go
        on writing slot records, since loading lays slot records over a whole baseline."""

    def load(self, feeder: str) -> dict[str, Any] | None:
        """Load the feeder from the records recovered into the table, if it holds any, and take them
        out of it; returns the loaded state's header (with ``persisted_at``, epoch ms) when it did."""
        if self.table is None:
            return None
        blob = self.table.pop(f"{feeder}|fast".encode(), None)
        if blob is None:
            return None
        slot_records = self._take_slot_records(feeder)
        whole_blob = self.table.pop(f"{feeder}|b".encode(), None)
        header, fast = decode_state(blob)
        meters: list[str] = header["meters"]
        arrays = {name: fast[name] for name in FAST_ARRAYS}
        arrays["how"] = np.zeros((len(meters), *self.store.how.shape[1:]), dtype=np.float32)
        arrays["hod"] = np.zeros((len(meters), *self.store.hod.shape[1:]), dtype=np.float32)
        whole = decode_state(whole_blob)[1] if whole_blob is not None else {}
        for kind, name, slots in (("h", "how", HOW_SLOTS), ("d", "hod", HOD_SLOTS)):
            target = arrays[name]
            if name in whole:  # the whole baseline first: slot records are newer (a feeder that grew)
                target[: len(whole[name])] = whole[name][: len(meters)]
            for slot, slot_blob in slot_records[kind].items():
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
        # slots the record carried without slot records: this worker's next records must carry them too
        self._carried[feeder] = (_mask(header.get("h_slots", [])), _mask(header.get("d_slots", [])))
        self._keeps_slot_records.discard(feeder)
        if slot_records["h"] or slot_records["d"]:
            self._keeps_slot_records.add(feeder)
        return header

    def _whole_bytes(self) -> int:
        """A meter's whole baseline, in bytes."""
        return self.store.how[0].nbytes + self.store.hod[0].nbytes if len(self.store.how) else 0

    def _take_slot_records(self, feeder: str) -> dict[str, dict[int, bytes]]:
        """The feeder's slot records the table holds, by kind (``h``, ``d``) and slot, taken out of it."""
        taken: dict[str, dict[int, bytes]] = {"h": {}, "d": {}}
        for kind, slots in (("h", HOW_SLOTS), ("d", HOD_SLOTS)):
            for slot in range(slots):
                blob = self.table.pop(f"{feeder}|{kind}{slot}".encode(), None)
                if blob is not None:
                    taken[kind][slot] = blob
        return taken

    def drop(self, feeders: list[str]) -> None:
        """Forget the feeders' state (a partition this worker lost): their meters' rows go back to the
        store, and their open incidents are forgotten. Whoever owns them now has it all in the changelog."""
        for feeder in feeders:
            meters = self.members.pop(feeder, [])
            self.store.release(meters)
            self._member_sets.pop(feeder, None)
            self._rows.pop(feeder, None)
            self._carried.pop(feeder, None)
            self._meters_text.pop(feeder, None)
            self._keeps_slot_records.discard(feeder)
            if self.incidents is not None:
                self.incidents.import_feeder(feeder, [])

    def join(self, meter_ids: list[str], feeder_ids: list[str]) -> None:
        """Make each meter a member of its feeder's persisted state (a meter's first reading)."""
        for meter, feeder in zip(meter_ids, feeder_ids):
            members = self._member_sets.get(feeder)
            if members is None:
                members = self._member_sets[feeder] = set(self.members.setdefault(feeder, []))
            if meter not in members:
                members.add(meter)
                self.members[feeder].append(meter)

    def _feeder_rows(self, feeder: str) -> np.ndarray:
        meters = self.members[feeder]
        rows = self._rows.get(feeder)
        if rows is None or len(rows) != len(meters):  # store rows never move; members only grow
            rows = self._rows[feeder] = self.store.rows_for(meters)
        return rows

    def _meters_json(self, feeder: str) -> str:
        meters = self.members[feeder]
        cached = self._meters_text.get(feeder)
        if cached is None or cached[0] != len(meters):
            cached = self._meters_text[feeder] = (len(meters), json.dumps(meters))
        return cached[1]

    def persist(self, touched: dict[str, tuple[set[int], set[int]]]) -> None:
        """Write each touched feeder's fast state with the baseline slots (hour of week, hour of day)
        changed since its slot records were written, and those slot records once they outgrow it.

        A micro-batch of single readings touches thousands of feeders, so feeders of the same
        shape (meters, changed slots of each kind) are encoded together: one gather per array for
        all of them, one layout, and per feeder only its header's own fields and byte slices. The
        blobs are those :func:`detection.state_codec.decode_state` reads.
        """
        if self.table is None or not touched:
            return
        how_bytes = self.store.how.shape[2] * self.store.how.itemsize
        hod_bytes = self.store.hod.shape[2] * self.store.hod.itemsize
        carried, limit = self._carried, self.slot_records_after_bytes
        whole_limit = self.whole_baseline_bytes // max(1, self._whole_bytes())  # meters
        slots: dict[str, tuple[int, int]] = {}
        shapes: dict[tuple[int, int, int, str], list[str]] = {}
        for feeder, (how_slots, hod_slots) in touched.items():
            meters = len(self.members[feeder])
            how_before, hod_before = carried.get(feeder, NOTHING_CARRIED)
            how_all, hod_all = how_before | _mask(how_slots), hod_before | _mask(hod_slots)
            how_count, hod_count = how_all.bit_count(), hod_all.bit_count()
            spill = meters * (how_count * how_bytes + hod_count * hod_bytes) > limit
            carried[feeder] = NOTHING_CARRIED if spill else (how_all, hod_all)
            slots[feeder] = (how_all, hod_all)
            small = meters <= whole_limit and feeder not in self._keeps_slot_records
            baseline = ("whole" if small else "slots") if spill else ""
            shapes.setdefault((meters, how_count, hod_count, baseline), []).append(feeder)
        persisted_at = int(time.time() * 1000)
        for (_, _, _, baseline), feeders in shapes.items():
            self._persist_alike(feeders, slots, persisted_at, baseline)

    def _persist_alike(self, feeders: list[str], slots: dict[str, tuple[int, int]],
                       persisted_at: int, baseline: str) -> None:
        """:meth:`persist` for feeders with the same number of meters and of carried slots; with
        ``baseline`` "slots" their slot records too, with "whole" their whole-baseline record."""
        store, table = self.store, self.table
        g = len(feeders)
        rows = np.stack([self._feeder_rows(f) for f in feeders])  # (feeders, meters)
        n = rows.shape[1]
        how = np.array([_slots(slots[f][0]) for f in feeders], dtype=np.int64).reshape(g, -1)
        hod = np.array([_slots(slots[f][1]) for f in feeders], dtype=np.int64).reshape(g, -1)
        flat = rows.reshape(-1)
        arrays = [getattr(store, name)[flat] for name in FAST_ARRAYS]
        how_changed = store.how[rows[:, :, None], how[:, None, :]]  # (feeders, meters, slots, 3)
        hod_changed = store.hod[rows[:, :, None], hod[:, None, :]]
        arrays += [how_changed, hod_changed]
        layout = _layout([_per_feeder(a, g) for a in arrays])
        body = np.concatenate([np.ascontiguousarray(a).reshape(g, -1).view(np.uint8) for a in arrays], axis=1)
        slot_records = baseline == "slots"
        if slot_records:  # (feeders, slots, bytes of one slot record's values)
            how_slot_values, hod_slot_values = _slot_rows(how_changed), _slot_rows(hod_changed)
        if baseline == "whole":  # (feeders, bytes of the feeder's meters' how then hod)
            whole_values = np.concatenate([store.how[rows].reshape(g, -1).view(np.uint8),
                                           store.hod[rows].reshape(g, -1).view(np.uint8)], axis=1)
            whole_prefix = _prefix((("how", store.how.dtype, (n, *store.how.shape[1:])),
                                    ("hod", store.hod.dtype, (n, *store.hod.shape[1:]))))
        how_prefix = _slot_prefix(store.how.dtype, (n, store.how.shape[2]))
        hod_prefix = _slot_prefix(store.hod.dtype, (n, store.hod.shape[2]))
        tail = f'"{_FORMAT_KEY}": {STATE_FORMAT}, "{_LAYOUT_KEY}": {layout}}}'
        for i, feeder in enumerate(feeders):
            how_list, hod_list = how[i].tolist(), hod[i].tolist()
            open_incidents = self.incidents.export_feeder(feeder) if self.incidents is not None else None
            # most feeders have none open: no key then, which loading reads as none
            incidents = f'"incidents": {json.dumps(open_incidents)}, ' if open_incidents else ""
            head = (f'{{"meters": {self._meters_json(feeder)}, "persisted_at": {persisted_at}, '
                    f'"h_slots": {how_list}, "d_slots": {hod_list}, {incidents}{tail}').encode()
            blob = len(head).to_bytes(4, "big") + head + body[i].tobytes()
            table[f"{feeder}|fast".encode()] = blob  # first: see the module docstring
            if baseline == "whole":
                table[f"{feeder}|b".encode()] = whole_prefix + whole_values[i].tobytes()
            if not slot_records:
                continue
            for j, slot in enumerate(how_list):
                table[f"{feeder}|h{slot}".encode()] = how_prefix + how_slot_values[i, j].tobytes()
            for j, slot in enumerate(hod_list):
                table[f"{feeder}|d{slot}".encode()] = hod_prefix + hod_slot_values[i, j].tobytes()


NOTHING_CARRIED = (0, 0)
"""Carried slot masks (hour of week, hour of day) of a feeder whose record carries none."""


def _mask(slots: Iterable[int]) -> int:
    """Slot numbers as the bits of one int."""
    mask = 0
    for slot in slots:
        mask |= 1 << slot
    return mask


def _slots(mask: int) -> list[int]:
    """The slot numbers of a mask's bits, in ascending order."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


_FORMAT_KEY, _LAYOUT_KEY = "_format", "_arrays"
"""The header keys :mod:`detection.state_codec` reads the format and the arrays' layout from (a
round trip through its decoder is tested)."""


def _per_feeder(a: np.ndarray, feeders: int) -> tuple[str, tuple[int, ...]]:
    """(dtype, shape) of one feeder's part of an array gathered for ``feeders`` alike feeders: the
    changed slots come as (feeders, meters, slots, values), the rest as (feeders x meters, ...)."""
    if a.ndim == 4:
        return a.dtype.str, a.shape[1:]
    return a.dtype.str, (a.shape[0] // feeders, *a.shape[1:])


def _layout(parts: list[tuple[str, tuple[int, ...]]],
            names: tuple[str, ...] = (*FAST_ARRAYS, "how_changed", "hod_changed")) -> str:
    return "[" + ", ".join(f'["{name}", "{dtype}", {list(shape)}]' for name, (dtype, shape) in zip(names, parts)) + "]"


def _slot_rows(changed: np.ndarray) -> np.ndarray:
    """(feeders, meters, slots, values) -> (feeders, slots, bytes): each slot's values of all the
    feeder's meters, as one slot record holds them."""
    g, n, k, v = changed.shape
    if k == 0:
        return np.zeros((g, 0, 0), dtype=np.uint8)
    return np.ascontiguousarray(changed.transpose(0, 2, 1, 3)).reshape(g, k, -1).view(np.uint8)


_prefixes: dict[tuple[tuple[str, str, tuple[int, ...]], ...], bytes] = {}


def _prefix(parts: tuple[tuple[str, np.dtype, tuple[int, ...]], ...]) -> bytes:
    """The bytes :func:`detection.state_codec.encode_state` puts before arrays of these names, dtypes and
    shapes (with an empty header), so a record is this prefix and the arrays' bytes."""
    key = tuple((name, dtype.str, tuple(shape)) for name, dtype, shape in parts)
    prefix = _prefixes.get(key)
    if prefix is None:
        head = json.dumps({_FORMAT_KEY: STATE_FORMAT,
                           _LAYOUT_KEY: [[name, dtype, list(shape)] for name, dtype, shape in key]}).encode()
        prefix = _prefixes[key] = len(head).to_bytes(4, "big") + head
    return prefix


def _slot_prefix(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The bytes ``encode_state({}, {"v": values})`` puts before ``values`` of this dtype and shape."""
    return _prefix((("v", dtype, shape),))
