"""Pacing: one delivery slot at a time, on a clock that keeps its rhythm across blocks."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from producers.pacing import Pacer, paced_chunks


def _frame(times: list[str], meters: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": pd.to_datetime(times, utc=True).as_unit("ms"), "meter_id": meters})


def test_unpaced_frame_is_one_chunk():
    frame = _frame(["2026-01-01T00:15Z", "2026-01-01T00:30Z"], ["a", "a"])
    chunks = list(paced_chunks(frame, None))
    assert len(chunks) == 1 and chunks[0].equals(frame)


def test_chunks_are_delivery_slots_and_late_readings_ride_along():
    frame = _frame(
        ["2026-01-01T00:15Z", "2026-01-01T00:15Z", "2026-01-01T00:30Z", "2026-01-01T00:15Z", "2026-01-01T00:45Z"],
        ["a", "b", "a", "b-late", "a"],
    )
    chunks = list(paced_chunks(frame, Pacer(1e9)))
    assert [c["meter_id"].tolist() for c in chunks] == [["a", "b"], ["a", "b-late"], ["a"]]


@pytest.mark.timing
def test_speedup_spaces_slots_in_wall_clock_time():
    frame = _frame(["2026-01-01T00:15Z", "2026-01-01T00:30Z", "2026-01-01T00:45Z"], ["a", "a", "a"])
    waits: list[float] = []
    pacer = Pacer(9000.0, wait=lambda s: (waits.append(s), time.sleep(s)))  # 15 min -> 0.1 s
    started = time.monotonic()
    stamps = [time.monotonic() - started for _ in paced_chunks(frame, pacer)]
    assert stamps[0] < 0.05
    assert stamps[1] == pytest.approx(0.1, abs=0.05) and stamps[2] == pytest.approx(0.2, abs=0.05)
    assert waits and all(w <= 1.0 for w in waits)  # waits in short steps, so a producer can poll meanwhile


@pytest.mark.timing
def test_one_pacer_keeps_the_rhythm_across_blocks():
    pacer = Pacer(9000.0)
    started = time.monotonic()
    list(paced_chunks(_frame(["2026-01-01T00:15Z"], ["a"]), pacer))
    list(paced_chunks(_frame(["2026-01-01T00:30Z", "2026-01-01T00:45Z"], ["a", "a"]), pacer))
    assert time.monotonic() - started == pytest.approx(0.2, abs=0.05)


def test_speedup_must_be_positive():
    with pytest.raises(ValueError, match="speedup must be positive"):
        Pacer(0)


def test_a_pacer_kept_behind_the_wall_clock_never_releases_a_future_slot():
    """The demo runs 900x faster than real time: capped, its simulated clock catches up to now and
    then goes on in real time, never past it (a reading from the future is a wrong clock)."""
    now = time.time()
    waits: list[float] = []
    pacer = Pacer(1e9, wait=waits.append, clock=lambda: now, behind_wall_clock=True)
    pacer.wait_for(int((now - 3600) * 1000))  # an hour ago: due at once
    pacer.wait_for(int((now - 60) * 1000))
    assert sum(waits) < 0.01  # only the speedup's own (tiny) spacing
    waits.clear()
    clock = [now]

    def wait(seconds: float) -> None:  # waiting moves the (fake) wall clock on
        waits.append(seconds)
        clock[0] += seconds

    pacer = Pacer(1e9, wait=wait, clock=lambda: clock[0], behind_wall_clock=True)
    pacer.wait_for(int((now + 2.5) * 1000))  # 2.5 s ahead: waits until the clock reaches it, in steps
    assert sum(waits) == pytest.approx(2.5, abs=0.01) and all(w <= 1.0 for w in waits)


def test_chunks_before_a_resume_point_are_skipped_without_waiting():
    """A restarted demo regenerates its fleet and sends only what the topic does not hold yet."""
    frame = _frame(["2026-01-01T00:15Z", "2026-01-01T00:15Z", "2026-01-01T00:30Z", "2026-01-01T00:15Z",
                    "2026-01-01T00:45Z"], ["a", "b", "a", "b-late", "a"])
    resume = int(pd.Timestamp("2026-01-01T00:30Z").timestamp() * 1000)
    waits: list[float] = []
    chunks = list(paced_chunks(frame, Pacer(9000.0, wait=waits.append), skip_before_ms=resume))
    assert [c["meter_id"].tolist() for c in chunks] == [["a", "b-late"], ["a"]]
    assert [c["meter_id"].tolist() for c in paced_chunks(frame, None, skip_before_ms=resume)] == [
        ["a", "b-late", "a"]]
