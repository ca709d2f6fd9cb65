"""Late, stale and refused readings are told in one summary line a minute, never one per reading."""

from __future__ import annotations

import logging

from stream_processors.arrival_log import ArrivalSummary

T = 1_772_409_600_000  # 2026-03-02T00:00:00Z


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_late_readings_are_told_at_once_then_one_line_a_minute_with_counts(caplog):
    clock = Clock()
    summary = ArrivalSummary(logging.getLogger("test.arrivals"), period=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.arrivals"):
        summary.note(late=3, stale=0, duplicates=0, late_example=("M0001", T), stale_example=None)
        assert len(caplog.records) == 1
        line = caplog.records[0].getMessage()
        assert "3 late" in line and "M0001" in line and "2026-03-02T00:00:00Z" in line
        for _ in range(1000):  # a thousand more batches within the minute: no line
            clock.now += 0.05
            summary.note(late=2, stale=1, duplicates=4, late_example=("M0002", T), stale_example=("M0003", T - 1))
        summary.flush_due()
        assert len(caplog.records) == 1
        clock.now += 60.0
        summary.flush_due()
        assert len(caplog.records) == 2
        line = caplog.records[1].getMessage()
        assert "2000 late" in line and "1000 stale" in line and "4000 duplicate" in line and "M0003" in line
        clock.now += 120.0
        summary.flush_due()  # nothing held: no line
        assert len(caplog.records) == 2


def test_dead_lettered_readings_are_counted_by_kind_with_one_reason_as_example(caplog):
    clock = Clock()
    summary = ArrivalSummary(logging.getLogger("test.arrivals"), period=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.arrivals"):
        summary.note_rejected("timestamp out of range", "meter M9: timestamp 1 is before 2000-01-01")
        summary.note_rejected("timestamp out of range", "meter M8: timestamp 2 is before 2000-01-01")
        summary.note_rejected("bad energy_kwh", "meter M7: energy_kwh is not a finite number (nan)")
        assert len(caplog.records) == 1
        clock.now += 61
        summary.flush_due()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "timestamp out of range" in text and "meter M9" in text and "bad energy_kwh" in text
    assert "dead-letter" in text


def test_nothing_unusual_logs_nothing(caplog):
    summary = ArrivalSummary(logging.getLogger("test.arrivals"), period=60.0, clock=Clock())
    with caplog.at_level(logging.INFO, logger="test.arrivals"):
        summary.note(late=0, stale=0, duplicates=0, late_example=None, stale_example=None)
        summary.flush_due()
    assert caplog.records == []
