"""Replay readings on a simulated clock: at recorded speed, scaled, or as fast as possible."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from schemas.reading_encoder import delivery_slots, epoch_ms


class Pacer:
    """Maps simulated time to wall-clock time: ``speedup`` simulated seconds per wall second.

    One pacer spans a whole run, so blocks generated one after another keep a steady rhythm
    (the first slot it sees is "now"). ``speedup=None`` never waits.

    With ``behind_wall_clock`` a slot is also never released before its own time has come on
    the wall clock (``clock``, Unix seconds): a run that starts in the past replays it at
    ``speedup`` until it reaches now, then goes on in real time. The demo does this, so its
    readings are never stamped in the future, where every door refuses them as a wrong clock.
    """

    def __init__(self, speedup: float | None, *, wait: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.time, behind_wall_clock: bool = False) -> None:
        if speedup is not None and speedup <= 0:
            raise ValueError(f"speedup must be positive, got {speedup}")
        self.speedup = speedup
        self.wait = wait
        """Called with the seconds to wait; a producer's ``poll`` serves delivery reports meanwhile."""
        self.clock = clock
        self.behind_wall_clock = behind_wall_clock
        self._anchor: tuple[int, float] | None = None

    @property
    def paced(self) -> bool:
        return self.speedup is not None

    def wait_for(self, slot_ms: int) -> None:
        """Return when the interval ending at ``slot_ms`` is due."""
        if self.speedup is None:
            return
        if self._anchor is None:
            self._anchor = (slot_ms, time.monotonic())
        else:
            first_ms, wall_start = self._anchor
            due = wall_start + (slot_ms - first_ms) / 1000.0 / self.speedup
            while (delay := due - time.monotonic()) > 0:
                self.wait(min(delay, 1.0))
        if self.behind_wall_clock:
            while (ahead := slot_ms / 1000.0 - self.clock()) > 0:
                self.wait(min(ahead, 1.0))


def paced_chunks(frame: pd.DataFrame, pacer: Pacer | float | None, *, time_column: str = "timestamp",
                 skip_before_ms: int | None = None) -> Iterator[pd.DataFrame]:
    """Yield consecutive chunks of ``frame`` (in delivery order) when they are due.

    Without pacing everything is due at once. Otherwise a chunk is one delivery slot: the rows
    up to the next newer interval, so a fleet's interval goes out together, as a head-end sends
    it, and a late reading goes out with the newer readings it was delivered with. Rows of
    delivery slots before ``skip_before_ms`` are left out, without waiting: what a resumed run
    had sent already.
    """
    if frame.empty:
        return
    if not isinstance(pacer, Pacer):
        pacer = Pacer(pacer)
    if skip_before_ms is not None:
        frame = frame[delivery_slots(epoch_ms(frame[time_column])) >= skip_before_ms]
        if frame.empty:
            return
    if not pacer.paced:
        yield frame
        return
    slots = delivery_slots(epoch_ms(frame[time_column]))
    starts = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
    ends = np.r_[starts[1:], len(frame)]
    for start, end in zip(starts.tolist(), ends.tolist()):
        pacer.wait_for(int(slots[start]))
        yield frame.iloc[start:end]
