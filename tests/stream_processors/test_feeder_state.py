"""Feeder state in a table: a round trip restores every meter exactly; a batch writes only what it touched."""

from __future__ import annotations

import numpy as np
import pytest

from detection.calendar import time_slots
from detection.features import FeatureExtractor
from detection.meter_state import MeterStateStore
from stream_processors.feeder_state import FeederState
from tests.detection.hand_made import T0, batch, noisy_pattern


def fed_state() -> tuple[FeederState, dict[bytes, bytes], dict[str, tuple[set[int], set[int]]]]:
    extractor = FeatureExtractor()
    state = FeederState(extractor.store)
    state.table = {}
    series = noisy_pattern(2)
    ts = T0 + 3_600_000 * (1 + np.arange(len(series)))
    for meter in ("M1", "M2"):
        extractor.transform(batch([meter] * len(series), ts, series, np.full(len(series), 3600)))
    state.join(["M1", "M2"], ["F1", "F1"])
    slots = time_slots(ts, np.full(len(ts), 3600))
    touched = {"F1": (set(slots.hour_of_week.tolist()), set(slots.hour_of_day.tolist()))}
    state.persist(touched)
    return state, state.table, touched


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


def test_what_this_worker_wrote_itself_is_not_loaded_again():
    state, _, _ = fed_state()
    assert state.load("F1") is None
    assert state.load("F9") is None  # nothing in the table for this feeder


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
