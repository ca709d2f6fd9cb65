"""Meter state: rows, export and import, and the duplicate / late / stale policy."""

from __future__ import annotations

import numpy as np

from detection.features import FeatureExtractor
from detection.meter_state import NO_TIME, SEEN, MeterStateStore, Scalar
from foundation.timeutil import HOUR_MS
from tests.detection.hand_made import T0, batch, daily_pattern, run


def test_rows_are_assigned_on_first_sight_and_survive_growth():
    store = MeterStateStore(capacity=2)
    assert store.rows_for(["a", "b", "a"]).tolist() == [0, 1, 0]
    store.scalars[1, Scalar.MEAN] = 4.2
    assert store.rows_for(["c", "d", "e"]).tolist() == [2, 3, 4]
    assert store.capacity >= 5 and len(store) == 5
    assert store.scalars[store.rows_for(["b"])[0], Scalar.MEAN] == 4.2


def test_duplicates_are_not_scored_and_late_readings_do_not_move_state():
    ex, fb = run(daily_pattern(3))
    n = len(daily_pattern(3))
    last_ts = T0 + HOUR_MS * n
    before = ex.store.export_rows(ex.store.rows_for(["m"]))
    dup = ex.transform(batch(["m"], [last_ts], [9.0], [3600]))
    assert dup.duplicate.all() and not dup.scored.any()
    late = ex.transform(batch(["m"], [last_ts - 30 * 60_000], [0.4], [3600]))
    assert late.late.all() and late.scored.all()
    after = ex.store.export_rows(ex.store.rows_for(["m"]))
    for key in ("scalars", "how", "hod", "window", "last_ts"):
        np.testing.assert_array_equal(before[key], after[key])
    again = ex.transform(batch(["m"], [last_ts - 30 * 60_000], [0.4], [3600]))
    assert again.duplicate.all()  # a late reading seen twice is a duplicate too
    stale = ex.transform(batch(["m"], [T0 + HOUR_MS], [0.4], [3600]))
    assert stale.stale.all() and not stale.scored.any()


def test_exported_state_resumes_identically():
    first, rest = daily_pattern(3), daily_pattern(1) + [4.0, 0.0]
    ex, _ = run(first)
    saved = ex.store.export_rows(ex.store.rows_for(["m"]))
    restored = FeatureExtractor(MeterStateStore())
    restored.store.import_rows(["m"], saved)
    start = T0 + HOUR_MS * len(first)
    _, a = run(rest, start=start, extractor=ex)
    _, b = run(rest, start=start, extractor=restored)
    np.testing.assert_array_equal(a.matrix, b.matrix)


def test_state_exported_before_a_column_was_added_imports_with_it_at_zero():
    ex, _ = run(daily_pattern(3))
    saved = ex.store.export_rows(ex.store.rows_for(["m"]))
    saved["scalars"] = saved["scalars"][:, :Scalar.IN_OCCASION]  # as written before IN_OCCASION existed
    restored = MeterStateStore()
    restored.import_rows(["m"], saved)
    row = restored.rows_for(["m"])[0]
    np.testing.assert_array_equal(restored.scalars[row, :Scalar.IN_OCCASION], saved["scalars"][0])
    assert restored.scalars[row, Scalar.IN_OCCASION] == 0.0


def test_a_burst_of_late_readings_never_makes_the_newest_reading_count_twice():
    """After a crash, a replay re-delivers old readings; the newest must still be known as seen."""
    ex = FeatureExtractor()
    minute = 60_000
    on_time = T0 + minute * 10 * np.arange(64)  # every 10 minutes
    ex.transform(batch(["m"] * 64, on_time, np.full(64, 1.0), np.full(64, 600)))
    applied = ex.store.scalars[0, Scalar.READINGS]
    # SEEN readings that arrive late, all newer than the oldest remembered one
    late = np.r_[T0 + minute * (10 * np.arange(32, 63) + 1), T0 + minute * 625]
    assert len(late) == SEEN
    fb = ex.transform(batch(["m"] * SEEN, late, np.full(SEEN, 1.0), np.full(SEEN, 600)))
    assert fb.late.all()
    again = ex.transform(batch(["m"], on_time[-1:], [1.0], [600]))
    assert again.duplicate.all()
    assert ex.store.scalars[0, Scalar.READINGS] == applied


def test_a_released_meters_row_is_cleared_and_given_to_the_next_new_meter():
    store = MeterStateStore(capacity=2)
    rows = store.rows_for(["a", "b", "c"])
    store.scalars[rows, Scalar.MEAN] = [1.0, 2.0, 3.0]
    store.seen[rows, 0] = 7
    store.release(["b", "unknown"])
    assert len(store) == 2 and "b" not in store.index
    new = store.rows_for(["d"])[0]
    assert new == rows[1]  # b's row, before any row past the used ones
    assert store.scalars[new, Scalar.MEAN] == 0.0 and store.seen[new, 0] == NO_TIME
    assert store.scalars[store.rows_for(["a", "c"]), Scalar.MEAN].tolist() == [1.0, 3.0]  # the rest untouched
    assert store.rows_for(["b"])[0] == 3  # b again is a new meter, past the used rows
