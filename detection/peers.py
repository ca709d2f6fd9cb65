"""What a whole feeder does at once is nobody's anomaly: deviations discounted by the peers' median.

When most meters of a feeder use more than their baseline at once, the cause is common: the
first Saturday morning of a new meter's history (its hour-of-week slot not yet seen), a
holiday, a heat wave, a clock change. Such a shift is not an anomaly of any one meter; nor are
zeros a gas feeder reads together on a warm evening, nor a level shift its meters make together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PEER_FEATURES = ("deviation", "relative_deviation", "window_deviation", "change", "drift", "forecast_residual")
"""Deviation features that move together when a whole feeder deviates at once."""
MIN_PEERS = 8
"""Readings of one group and interval needed before their median is trusted as a common mode."""
WHOLE_FILE = "all"
"""The peer group of every reading of a file without feeders."""


def peer_groups(frame: pd.DataFrame) -> np.ndarray:
    """Whom each reading is compared with: its feeder, or the whole file when there are no feeders.

    A CSV of meters without feeder ids is usually one site or one village: its meters share
    weather, holidays and weekly rhythm, so together they are the peer group.
    """
    if "feeder_id" in frame and not frame["feeder_id"].astype(str).eq(frame["meter_id"].astype(str)).all():
        return frame["feeder_id"].astype(str).to_numpy()
    return np.full(len(frame), WHOLE_FILE, dtype=object)


def _any_group_reaches(groups: np.ndarray, size: int) -> bool:
    """Whether some group has at least ``size`` readings (of any interval): a cheap test that spares
    the grouping by group and interval when every group is smaller, e.g. one meter per feeder."""
    counts: dict[object, int] = {}
    for group in groups.tolist():
        n = counts[group] = counts.get(group, 0) + 1
        if n >= size:
            return True
    return False


def peer_cells(groups: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each reading's cell, 0 to cells - 1; the readings of each cell): a cell is one group and timestamp,
    the readings that are each other's peers."""
    _, group_code = np.unique(groups, return_inverse=True)
    _, ts_code = np.unique(ts, return_inverse=True)
    key = group_code.reshape(-1).astype(np.int64) * (int(ts_code.max()) + 1) + ts_code.reshape(-1)
    _, cell = np.unique(key, return_inverse=True)
    cell = cell.reshape(-1)
    return cell, np.bincount(cell)


def cell_medians(cell: np.ndarray, size: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The median of each column of ``values`` (rows = readings) over each reading's cell, row-aligned.

    NaN is skipped (a reading without a forecast) and a cell with no value gets NaN; an even count takes
    the mean of the middle two: what pandas' ``groupby(...).transform("median")`` gives, without building
    a frame in every micro-batch (a fixed cost that small batches, as at low rates, paid three times each).
    """
    values = values.reshape(len(cell), -1)
    starts = np.concatenate(([0], np.cumsum(size)[:-1]))
    medians = np.full((len(size), values.shape[1]), np.nan)
    for c in range(values.shape[1]):
        v = values[:, c]
        ordered = v[np.lexsort((v, cell))]  # by cell, then by value, NaN last within a cell
        known = np.bincount(cell, weights=~np.isnan(v), minlength=len(size)).astype(np.int64)
        some = known > 0
        lower, upper = (starts + (known - 1) // 2)[some], (starts + known // 2)[some]
        medians[some, c] = (ordered[lower] + ordered[upper]) / 2.0
    return medians[cell]


def correct_for_peers(matrix: np.ndarray, columns: list[int], scored: np.ndarray, groups: np.ndarray,
                      ts: np.ndarray, kwh: np.ndarray) -> None:
    """Discount, in ``matrix`` (rows = readings), deviations a reading shares with its peers.

    Peers are the readings of the same group (``groups``, e.g. the feeder) and timestamp. For
    each deviation feature (``columns`` of the matrix: :data:`PEER_FEATURES`), the median over the
    group's readings of that interval is the common mode; a reading's deviation is shrunk towards
    zero by it when both point the same way, and left alone when they disagree (a meter that
    falls while its peers rise is still unusual). Readings of zero energy are never discounted,
    nor count as peers: a feeder-wide outage is still an outage of every meter on it. Groups
    smaller than :data:`MIN_PEERS` are left alone.
    """
    candidates = scored & (np.abs(kwh) > 1e-9)  # a net meter's export is a reading like any other
    if candidates.sum() < MIN_PEERS:
        return
    idx = np.flatnonzero(candidates)
    if not _any_group_reaches(groups[idx], MIN_PEERS):
        return  # no group and interval can have enough peers: nothing would change
    cols = list(columns)
    values = matrix[np.ix_(idx, cols)]
    cell, size = peer_cells(groups[idx], ts[idx])
    enough = size[cell] >= MIN_PEERS
    if not enough.any():
        return
    common = cell_medians(cell, size, values)
    same_way = (np.sign(values) == np.sign(common)) & enough[:, None]
    shrunk = np.sign(values) * np.maximum(np.abs(values) - np.abs(common), 0.0)
    matrix[np.ix_(idx, cols)] = np.where(same_way, shrunk, values)


ZERO_COMMON = 0.1
"""Peers whose median chance of reading zero is at least this read zero as part of their normal life
(gas in spring, pumps, solar at noon)."""
ZERO_SHARED = 0.25
"""Share of such peers reading zero at once from which the cause is common (a warm evening, the end
of a season): outages of single meters are rare, never a quarter of a feeder at one time."""


def correct_zero_runs_for_peers(matrix: np.ndarray, column: int, scored: np.ndarray, groups: np.ndarray,
                                ts: np.ndarray, kwh: np.ndarray, zero_probability: np.ndarray) -> None:
    """Discount, in ``matrix[:, column]`` (the zero-run surprise), what zero readings share with their peers:
    a zero shared by enough of them is only as surprising as their share makes it.

    Only where zeros are ordinary for the peers: when a quarter or more of a gas network's meters read
    zero on a warm evening, none of them has an outage. Where the peers almost never read zero (electricity
    meters), a feeder-wide run of zeros is a power cut, an outage of every meter on it, and is
    left alone.
    """
    if scored.sum() < MIN_PEERS:
        return
    idx = np.flatnonzero(scored)
    if not _any_group_reaches(groups[idx], MIN_PEERS):
        return  # no group and interval can have enough peers: nothing would change
    zero = np.abs(kwh[idx]) <= 1e-9
    cell, size = peer_cells(groups[idx], ts[idx])
    zero_share = (np.bincount(cell, weights=zero, minlength=len(size)) / size)[cell]
    usual_zeros = cell_medians(cell, size, zero_probability[idx])[:, 0]
    shared = (size[cell] >= MIN_PEERS) & (zero_share >= ZERO_SHARED) & (usual_zeros >= ZERO_COMMON) & zero
    surprise = matrix[idx, column]
    # Given the common cause, a zero here is about as likely as the share of peers reading zero now: the
    # run is explained while they keep reading zero (not merely shortened by theirs: zero runs of one
    # feeder start at different hours), and is judged by its own surprise again once they stop.
    matrix[idx, column] = np.where(shared, np.minimum(surprise, -np.log10(np.maximum(zero_share, 1e-9))), surprise)


SHIFT_SHARED = 0.5
"""Median peer pressure (share of the way to a level shift, the same way) from which a meter's shift is
the feeder's: when half its meters are at least halfway to stepping up at once, the cause is common."""


def shared_level_shifts(pressure: np.ndarray, shifting: np.ndarray, scored: np.ndarray, groups: np.ndarray,
                        ts: np.ndarray) -> np.ndarray:
    """Which of the ``shifting`` readings' level shifts their peers share (same group and timestamp):
    a feeder whose meters all step up within hours (a season, a tariff, the clock) is not an anomaly
    of any one of them. Their baselines still follow the new level; only the report is left out."""
    shared = np.zeros(len(pressure), dtype=bool)
    if not shifting.any() or scored.sum() < MIN_PEERS:
        return shared
    idx = np.flatnonzero(scored)
    own = pressure[idx]
    cell, size = peer_cells(groups[idx], ts[idx])
    median = cell_medians(cell, size, own)[:, 0]
    common = (size[cell] >= MIN_PEERS) & (np.sign(median) == np.sign(own)) & (np.abs(median) >= SHIFT_SHARED)
    shared[idx] = shifting[idx] & common
    return shared
