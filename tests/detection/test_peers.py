"""Peer correction: what a feeder shares is discounted, what a meter does alone is not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from detection.peers import (
    MIN_PEERS,
    WHOLE_FILE,
    cell_medians,
    correct_for_peers,
    correct_zero_runs_for_peers,
    peer_cells,
    peer_groups,
    shared_level_shifts,
)


def test_a_shared_rise_is_discounted_and_a_lone_fall_kept():
    n = 10
    matrix = np.zeros((n, 2))
    matrix[:, 0] = 1.0  # every meter of the feeder 1 above its baseline
    matrix[0, 0] = 3.0  # one meter much more
    matrix[1, 0] = -2.0  # one meter falls while its peers rise
    correct_for_peers(matrix, [0], np.ones(n, dtype=bool), np.full(n, "F"), np.zeros(n), np.ones(n))
    assert matrix[0, 0] == 2.0  # shrunk by the common mode (the median, 1)
    assert matrix[1, 0] == -2.0  # disagrees with its peers: left alone
    assert (matrix[2:, 0] == 0).all()
    assert (matrix[:, 1] == 0).all()  # other columns untouched


def test_zero_readings_and_small_groups_are_left_alone():
    n = MIN_PEERS
    matrix = np.full((n, 1), 1.0)
    kwh = np.ones(n)
    kwh[0] = 0.0  # an outage: never discounted, nor a peer; the rest are too few
    correct_for_peers(matrix, [0], np.ones(n, dtype=bool), np.full(n, "F"), np.zeros(n), kwh)
    assert (matrix == 1.0).all()


def test_peer_groups_are_feeders_or_the_whole_file():
    with_feeders = pd.DataFrame({"meter_id": ["a", "b"], "feeder_id": ["F1", "F2"]})
    assert peer_groups(with_feeders).tolist() == ["F1", "F2"]
    without = pd.DataFrame({"meter_id": ["a", "b"]})
    assert peer_groups(without).tolist() == [WHOLE_FILE, WHOLE_FILE]
    self_fed = pd.DataFrame({"meter_id": ["a", "b"], "feeder_id": ["a", "b"]})
    assert peer_groups(self_fed).tolist() == [WHOLE_FILE, WHOLE_FILE]


def test_zeros_a_gas_feeder_shares_are_only_as_surprising_as_their_share():
    n = 20
    surprise = np.full((n, 1), 5.0)
    kwh = np.where(np.arange(n) < 10, 0.0, 1.0)  # half the feeder reads zero on a warm evening
    correct_zero_runs_for_peers(surprise, 0, np.ones(n, dtype=bool), np.full(n, "F"), np.zeros(n), kwh,
                                np.full(n, 0.3))  # zeros are ordinary for these meters
    assert np.allclose(surprise[:10, 0], -np.log10(0.5))
    assert (surprise[10:, 0] == 5.0).all()  # readings that are not zero keep their values


def test_a_power_cut_and_a_lone_zero_keep_their_surprise():
    n = 20
    surprise = np.full((n, 1), 5.0)
    cut = np.zeros(n)  # the whole electricity feeder reads zero: an outage of every meter
    correct_zero_runs_for_peers(surprise, 0, np.ones(n, dtype=bool), np.full(n, "F"), np.zeros(n), cut,
                                np.full(n, 0.001))
    assert (surprise == 5.0).all()
    lone = np.where(np.arange(n) == 0, 0.0, 1.0)  # one gas meter of twenty at zero
    correct_zero_runs_for_peers(surprise, 0, np.ones(n, dtype=bool), np.full(n, "F"), np.zeros(n), lone,
                                np.full(n, 0.3))
    assert surprise[0, 0] == 5.0


def test_a_level_shift_the_whole_feeder_makes_is_the_feeders():
    n = MIN_PEERS + 2
    pressure = np.full(n, 0.8)  # every meter of the feeder most of the way to stepping up
    pressure[0] = 1.0  # one crossed
    shifting = np.arange(n) == 0
    everyone = np.ones(n, dtype=bool)
    assert shared_level_shifts(pressure, shifting, everyone, np.full(n, "F"), np.zeros(n)).tolist() == shifting.tolist()
    lone = np.where(shifting, 1.0, 0.1)  # its peers barely moved: its own shift
    assert not shared_level_shifts(lone, shifting, everyone, np.full(n, "F"), np.zeros(n)).any()
    falling = np.where(shifting, 1.0, -0.8)  # its peers fell while it rose
    assert not shared_level_shifts(falling, shifting, everyone, np.full(n, "F"), np.zeros(n)).any()


def test_cell_sizes_and_medians_are_pandas_groupby_transforms():
    """Sizes and medians per group and timestamp, NaN skipped, even counts averaged, all-NaN cells NaN."""
    rng = np.random.default_rng(4)
    n = 5000
    groups = rng.choice(np.array(["F1", "F2", "F10", "all"], dtype=object), n)
    ts = rng.choice(np.array([0, 3_600_000, 7_200_000, 86_400_000]), n)
    values = np.round(rng.normal(size=(n, 3)), 1)  # ties too
    values[rng.random((n, 3)) < 0.2] = np.nan
    values[(groups == "F10") & (ts == 0), 2] = np.nan  # a cell with no value at all in one column
    frame = pd.DataFrame(values, columns=["a", "b", "c"]).assign(g=groups, t=ts)
    grouped = frame.groupby(["g", "t"], sort=False)
    cell, size = peer_cells(groups, ts)
    np.testing.assert_array_equal(size[cell], grouped["a"].transform("size").to_numpy())
    medians = grouped[["a", "b", "c"]].transform("median").to_numpy()
    np.testing.assert_array_equal(cell_medians(cell, size, values), medians)
