"""The replay: time order, cuts that never split an interval, forecasts and peers carried along."""

from __future__ import annotations

import numpy as np
import pandas as pd

from detection.peers import WHOLE_FILE
from detection.replay import TimeOrderedReadings, time_aligned_chunks, with_defaults


def frame() -> pd.DataFrame:
    ts = pd.to_datetime(["2026-03-02T02:00Z", "2026-03-02T01:00Z", "2026-03-02T01:00Z", "2026-03-02T03:00Z"])
    return pd.DataFrame({"timestamp": ts, "meter_id": ["a", "a", "b", "b"], "kwh": [2.0, 1.0, 5.0, 6.0]})


def test_cuts_move_to_the_next_change_of_timestamp():
    ts = np.array([1, 1, 1, 2, 2, 3])
    assert time_aligned_chunks(ts, 2) == [(0, 3), (3, 5), (5, 6)]
    assert time_aligned_chunks(np.array([], dtype=np.int64), 2) == []


def test_defaults_fill_feeders_and_intervals():
    filled = with_defaults(frame())
    assert filled["feeder_id"].tolist() == filled["meter_id"].tolist()
    assert filled["interval_seconds"].tolist() == [3600, 3600, 7200, 7200]


def test_batches_are_in_time_order_with_their_forecasts_and_peers():
    class Forecasts:
        expected = np.array([20.0, 10.0, 50.0, 60.0])
        lower = expected - 1
        upper = expected + 1

    readings = TimeOrderedReadings(frame(), Forecasts())
    ((part, batch),) = list(readings.batches())
    assert part == slice(0, 4)
    assert batch.meter_ids == ["a", "b", "a", "b"]
    assert batch.kwh.tolist() == [1.0, 5.0, 2.0, 6.0]
    assert batch.expected.tolist() == [10.0, 50.0, 20.0, 60.0]
    assert set(batch.peer_groups) == {WHOLE_FILE}
    assert readings.in_frame_order(batch.kwh).tolist() == frame()["kwh"].tolist()
