"""A batch of readings as the detector takes it: parallel columns, in arrival order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ReadingBatch:
    """Readings scored together (a stream micro-batch, a chunk of a replayed file)."""

    meter_ids: list[str]
    feeder_ids: list[str]
    timestamps_ms: np.ndarray
    """UTC epoch milliseconds at the end of each reading's interval (int64)."""
    kwh: np.ndarray
    interval_s: np.ndarray
    expected: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    """The forecast covering each reading (NaN where none does), or None when there are no forecasts."""
    peer_groups: np.ndarray | None = None
    """Whom each reading is compared with (see :mod:`detection.peers`); None: its feeder."""

    def __post_init__(self) -> None:
        self.timestamps_ms = np.asarray(self.timestamps_ms, dtype=np.int64)
        self.kwh = np.asarray(self.kwh, dtype=np.float64)
        self.interval_s = np.asarray(self.interval_s, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.meter_ids)

    @property
    def groups(self) -> np.ndarray:
        return np.asarray(self.feeder_ids if self.peer_groups is None else self.peer_groups)
