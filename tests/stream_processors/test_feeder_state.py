"""Feeder state in a table: a round trip restores every meter exactly; a batch writes only what it touched."""

from __future__ import annotations

import numpy as np
import pytest

from detection.calendar import time_slots
from detection.features import FeatureExtractor
from detection.meter_state import MeterStateStore
from stream_processors.feeder_state import WHOLE_BASELINE_BYTES, FeederState
from tests.detection.hand_made import T0, batch, noisy_pattern


def fed_state(slot_records_after_bytes: int = 0, meters: tuple[str, ...] = ("M1", "M2"), days: int = 2,
              whole_baseline_bytes: int = 0) -> tuple[FeederState, dict[bytes, bytes],
                                                       dict[str, tuple[set[int], set[int]]]]:
    """Feeder F1's meters' ``days`` of hourly readings persisted in one batch; by default (0, 0) their slots
    go to slot records at once, as a head-end feeder's do."""
    extractor = FeatureExtractor()
    state = FeederState(extractor.store, slot_records_after_bytes, whole_baseline_bytes)
    state.table = {}
    series = noisy_pattern(days)
    ts = T0 + 3_600_000 * (1 + np.arange(len(series)))
    for meter in meters:
        extractor.transform(batch([meter] * len(series), ts, series, np.full(len(series), 3600)))
    state.join(list(meters), ["F1"] * len(meters))
    slots = time_slots(ts, np.full(len(ts), 3600))
    touched = {"F1": (set(slots.hour_of_week.tolist()), set(slots.hour_of_day.tolist()))}
    state.persist(touched)
    return state, state.table, touched


def persist_next_hour(state: FeederState, meters: list[str], kwh: list[float]) -> None:
    """The meters' reading for the hour after the newest their state holds, scored and persisted."""
    ts = np.full(len(meters), int(state.store.last_ts[state.store.rows_for(meters)].max()) + 3_600_000)
    hour = [3600] * len(meters)
    FeatureExtractor(state.store).transform(batch(meters, ts, kwh, hour, feeder_ids=["F1"] * len(meters)))
    slots = time_slots(ts[:1], np.array([3600]))
    state.persist({"F1": ({int(slots.hour_of_week[0])}, {int(slots.hour_of_day[0])})})


def test_a_new_store_loaded_from_the_table_holds_the_same_state():
    state, table, _ = fed_state()
    restored = FeederState(MeterStateStore())
    restored.table = dict(table)
    header = restored.load("F1")
    assert header is not None and header["meters"] == ["M1", "M2"] and header["persisted_at"] > 0
    original = state.store.export_rows(state.store.rows_for(["M1", "M2"]))
    loaded = restored.store.export_rows(restored.store.rows_for(["M1", "M2"]))
    for name, values in original.items():
        np.testing.assert_array_equal(loaded[name], values)
    assert restored.load("F1") is None  # unchanged since: nothing to load again


def test_only_the_touched_slots_are_written():
    _, table, touched = fed_state()
    written_how = {int(k.split(b"|h")[1]) for k in table if b"|h" in k}
    written_hod = {int(k.split(b"|d")[1]) for k in table if b"|d" in k}
    assert written_how == touched["F1"][0] and len(written_how) == 48  # two days of hours
    assert written_hod == touched["F1"][1]


def test_loading_takes_the_feeders_records_out_of_the_table_so_the_decoded_state_is_the_only_copy():
    _, table, _ = fed_state()
    recovered = dict(table)  # what a worker taking the partition over read back
    worker = FeederState(MeterStateStore())
    worker.table = recovered
    assert worker.load("F1") is not None
    assert recovered == {}  # the fast record and every slot record taken
    assert worker.load("F1") is None
    assert worker.load("F9") is None  # nothing in the table for this feeder


def test_a_dropped_feeder_is_forgotten_and_its_rows_go_to_new_meters():
    state, table, _ = fed_state(meters=("M1", "M2"))
    state.incidents = RecordingIncidents()
    state.drop(["F1"])
    assert state.members == {} and len(state.store) == 0
    assert state.incidents.imported == [("F1", [])]  # its open incidents forgotten too
    rows = state.store.rows_for(["M3"])  # a new meter takes a released row, cleared
    assert rows[0] in (0, 1) and state.store.scalars[rows[0]].sum() == 0
    worker = FeederState(MeterStateStore())  # whoever owns F1 now still loads all of it
    worker.table = dict(table)
    assert worker.load("F1")["meters"] == ["M1", "M2"]


class RecordingIncidents:
    def __init__(self) -> None:
        self.imported: list[tuple[str, list]] = []

    def import_feeder(self, feeder: str, states: list) -> None:
        self.imported.append((feeder, states))

    def export_feeder(self, feeder: str) -> list:
        return []


class DiesAfter(dict):
    """A table whose worker dies after ``writes`` more writes: the rest never reach the changelog."""

    def __init__(self, content: dict, writes: int) -> None:
        super().__init__(content)
        self.writes = writes

    def __setitem__(self, key, value) -> None:
        if self.writes > 0:
            super().__setitem__(key, value)
        self.writes -= 1


@pytest.mark.parametrize("writes_before_death", [0, 1, 2, 3])
def test_a_worker_dying_between_the_records_of_a_batch_leaves_the_state_of_one_batch(writes_before_death):
    """Recovered state is the state before the batch or after it, never a mix (a baseline updated twice)."""
    state, table, _ = fed_state()
    before = state.store.export_rows(state.store.rows_for(["M1", "M2"]))
    # one more interval: its readings move one hour-of-week and one hour-of-day slot of each meter
    extractor = FeatureExtractor(state.store)
    ts = np.array([T0 + 3_600_000 * 49] * 2)
    extractor.transform(batch(["M1", "M2"], ts, [9.0, 0.1], [3600, 3600], feeder_ids=["F1", "F1"]))
    after = state.store.export_rows(state.store.rows_for(["M1", "M2"]))
    slots = time_slots(ts[:1], np.array([3600]))
    state.table = DiesAfter(table, writes_before_death)
    state.persist({"F1": ({int(slots.hour_of_week[0])}, {int(slots.hour_of_day[0])})})
    restored = FeederState(MeterStateStore())
    restored.table = dict(state.table)
    restored.load("F1")
    got = restored.store.export_rows(restored.store.rows_for(["M1", "M2"]))
    expected = before if writes_before_death == 0 else after  # the fast record is written first
    for name, values in expected.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)


def test_records_decode_as_the_state_codec_encodes_them():
    """persist formats headers itself (it runs for thousands of feeders a batch): what it writes must be
    exactly what detection.state_codec would have written, field for field and array for array."""
    from detection.state_codec import decode_state, encode_state
    from stream_processors.feeder_state import FAST_ARRAYS

    state, table, touched = fed_state()
    header, arrays = decode_state(table[b"F1|fast"])
    rows = state.store.rows_for(["M1", "M2"])
    how, hod = sorted(touched["F1"][0]), sorted(touched["F1"][1])
    reference = {name: getattr(state.store, name)[rows] for name in FAST_ARRAYS}
    reference["how_changed"] = state.store.how[rows[:, None], how]
    reference["hod_changed"] = state.store.hod[rows[:, None], hod]
    want_header, want = decode_state(encode_state({"meters": ["M1", "M2"], "persisted_at": header["persisted_at"],
                                                    "h_slots": how, "d_slots": hod}, reference))
    assert header == want_header
    assert list(arrays) == list(want)
    for name, values in want.items():
        np.testing.assert_array_equal(arrays[name], values, err_msg=name)
        assert arrays[name].dtype == values.dtype
    slot_header, slot = decode_state(table[f"F1|h{how[0]}".encode()])
    want_slot_header, want_slot = decode_state(encode_state({}, {"v": state.store.how[rows, how[0]]}))
    assert slot_header == want_slot_header
    np.testing.assert_array_equal(slot["v"], want_slot["v"])


def restored_rows(table: dict, feeder: str, meters: list[str]) -> dict[str, np.ndarray]:
    """The meters' state as a new worker loads it from ``table``."""
    restored = FeederState(MeterStateStore())
    restored.table = dict(table)
    assert restored.load(feeder) is not None
    return restored.store.export_rows(restored.store.rows_for(meters))


@pytest.mark.parametrize("whole_baseline_bytes", [WHOLE_BASELINE_BYTES, 0])
def test_a_small_feeder_carries_its_changed_slots_in_one_record_until_they_outgrow_it(whole_baseline_bytes):
    """A one-meter feeder read hourly writes one record per reading, and its whole baseline in one record
    once the carried values pass the limit (or, without whole-baseline records, every carried slot's
    record); the state loaded from the table equals the live state after every batch."""
    extractor = FeatureExtractor()
    state = FeederState(extractor.store, slot_records_after_bytes=400,  # 11 hours of one meter's slots
                        whole_baseline_bytes=whole_baseline_bytes)
    state.table = Counting()
    series = noisy_pattern(2)
    slot_writes = []
    for i, kwh in enumerate(series):
        ts = np.array([T0 + 3_600_000 * (1 + i)])
        extractor.transform(batch(["M1"], ts, [kwh], [3600], feeder_ids=["F1"]))
        state.join(["M1"], ["F1"])
        slots = time_slots(ts, np.array([3600]))
        state.table.writes = 0
        state.persist({"F1": ({int(slots.hour_of_week[0])}, {int(slots.hour_of_day[0])})})
        slot_writes.append(state.table.writes)
        live = state.store.export_rows(state.store.rows_for(["M1"]))
        for name, values in restored_rows(state.table, "F1", ["M1"]).items():
            np.testing.assert_array_equal(values, live[name], err_msg=f"{name} after reading {i}")
    spills = [i for i, w in enumerate(slot_writes) if w > 1]
    assert spills and len(spills) <= len(series) // 10  # slot records every 12th reading, not every one
    assert all(w == 1 for i, w in enumerate(slot_writes) if i not in spills)  # else the fast record alone
    if whole_baseline_bytes:
        assert all(slot_writes[i] == 2 for i in spills)  # the fast record, then the whole baseline
        assert not any(b"|h" in k or b"|d" in k for k in state.table)
    else:
        assert all(slot_writes[i] == 1 + 2 * (spills[0] + 1) for i in spills)  # then every slot carried since


def test_a_small_feeder_loaded_with_slot_records_goes_on_writing_slot_records():
    """Slot records were all a feeder had before whole-baseline records; loading lays them over a whole
    baseline, so a feeder that has them keeps them current instead of writing a whole baseline under them."""
    _, table, _ = fed_state(meters=("M1",), days=1)  # slot records, as written before
    worker = FeederState(MeterStateStore(), slot_records_after_bytes=0)
    worker.table = dict(table)
    assert worker.load("F1") is not None
    persist_next_hour(worker, ["M1"], [3.0])
    assert b"F1|b" not in worker.table
    live = worker.store.export_rows(worker.store.rows_for(["M1"]))
    for name, values in restored_rows(worker.table, "F1", ["M1"]).items():
        np.testing.assert_array_equal(values, live[name], err_msg=name)


def test_slot_records_of_a_feeder_that_grew_are_laid_over_its_whole_baseline():
    state, table, _ = fed_state(meters=("M1",), days=1, whole_baseline_bytes=WHOLE_BASELINE_BYTES)
    assert b"F1|b" in table and not any(b"|h" in k for k in table)
    state.whole_baseline_bytes = 0  # as past a few meters: slot records from now on
    persist_next_hour(state, ["M1"], [4.0])
    persist_next_hour(state, ["M1"], [0.2])  # the hour before is now only in its slot records
    assert any(b"|h" in k for k in state.table) and b"F1|b" in state.table
    live = state.store.export_rows(state.store.rows_for(["M1"]))
    for name, values in restored_rows(state.table, "F1", ["M1"]).items():
        np.testing.assert_array_equal(values, live[name], err_msg=name)


class Counting(dict):
    """A table that counts its writes."""

    writes = 0

    def __setitem__(self, key, value) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def test_a_worker_taking_a_feeder_over_keeps_carrying_the_slots_its_record_carried():
    """Worker B loads a record carrying slots without slot records; after B's own next batch, a third worker
    loading from the table still has the slots A carried."""
    a, table, _ = fed_state(10_000, meters=("M1",), days=1)
    assert not any(b"|h" in k or b"|d" in k for k in table)  # all carried in the fast record
    b = FeederState(MeterStateStore(), slot_records_after_bytes=10_000)
    b.table = table
    assert b.load("F1") is not None
    persist_next_hour(b, ["M1"], [0.7])
    live = b.store.export_rows(b.store.rows_for(["M1"]))
    for name, values in restored_rows(b.table, "F1", ["M1"]).items():
        np.testing.assert_array_equal(values, live[name], err_msg=name)


@pytest.mark.parametrize("whole_baseline_bytes", [WHOLE_BASELINE_BYTES, 0])
@pytest.mark.parametrize("writes_before_death", [0, 1, 2])
def test_a_worker_dying_while_its_carried_slots_go_to_slot_records_leaves_the_state_of_one_batch(
        writes_before_death, whole_baseline_bytes):
    """The batch that moves carried slots to their records (or to the whole baseline) writes the fast record
    (carrying them all) first."""
    state, table, _ = fed_state(10_000, meters=("M1",), days=1, whole_baseline_bytes=whole_baseline_bytes)
    before = state.store.export_rows(state.store.rows_for(["M1"]))
    state.slot_records_after_bytes = 0  # the next batch moves every carried slot to its record
    state.table = DiesAfter(table, writes_before_death)
    persist_next_hour(state, ["M1"], [5.0])
    after = state.store.export_rows(state.store.rows_for(["M1"]))
    expected = before if writes_before_death == 0 else after
    for name, values in restored_rows(state.table, "F1", ["M1"]).items():
        np.testing.assert_array_equal(values, expected[name], err_msg=name)
