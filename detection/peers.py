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
    names = [f"f{c}" for c in cols]
    frame = pd.DataFrame(matrix[np.ix_(idx, cols)], columns=names)
    frame["_g"] = groups[idx]
    frame["_t"] = ts[idx]
    grouped = frame.groupby(["_g", "_t"], sort=False)
    size = grouped[names[0]].transform("size").to_numpy()
    common = grouped[names].transform("median").to_numpy()
    enough = size >= MIN_PEERS
    if not enough.any():
        return
    values = frame[names].to_numpy()
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
    frame = pd.DataFrame({"_g": groups[idx], "_t": ts[idx], "zero": np.abs(kwh[idx]) <= 1e-9,
                          "p": zero_probability[idx], "s": matrix[idx, column]})
    grouped = frame.groupby(["_g", "_t"], sort=False)
    size = grouped["zero"].transform("size").to_numpy()
    zero_share = grouped["zero"].transform("mean").to_numpy()
    usual_zeros = grouped["p"].transform("median").to_numpy()
    shared = (size >= MIN_PEERS) & (zero_share >= ZERO_SHARED) & (usual_zeros >= ZERO_COMMON) & frame["zero"].to_numpy()
    surprise = frame["s"].to_numpy()
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
    frame = pd.DataFrame({"_g": groups[idx], "_t": ts[idx], "p": pressure[idx]})
    grouped = frame.groupby(["_g", "_t"], sort=False)["p"]
    size = grouped.transform("size").to_numpy()
    median = grouped.transform("median").to_numpy()
    own = pressure[idx]
    common = (size >= MIN_PEERS) & (np.sign(median) == np.sign(own)) & (np.abs(median) >= SHIFT_SHARED)
    shared[idx] = shifting[idx] & common
    return shared
