"""Decoding readings messages into columns: a bad reading is rejected with its reason, its batch-mates go on."""

from __future__ import annotations

import pytest

from readings.columns import ReadingColumns, decode_into, reading_problem
from schemas.limits import EARLIEST_TIMESTAMP_MS, FUTURE_TOLERANCE_MS, MAX_ID_LENGTH
from schemas.serde import FORECAST, METER_READING, METER_READING_BATCH, SingleObjectSerde

NOW_MS = 1_772_413_200_000
"""The wall clock the tests validate against: an hour after the readings' timestamp."""


def reading(meter: str = "M1", kwh: float = 0.5, **overrides) -> dict:
    return {"meter_id": meter, "feeder_id": "F1", "timestamp": 1_772_409_600_000, "energy_kwh": kwh,
            "interval_seconds": 900, "voltage_v": None, "power_kw": None, "quality_flags": [], **overrides}


def test_single_readings_and_batches_become_one_set_of_columns():
    serde = SingleObjectSerde()
    columns = ReadingColumns()
    assert decode_into(columns, serde, serde.encode(METER_READING, reading("M1")), "s") == []
    batch = {"batch_id": "b", "feeder_id": "F1", "head_end_id": None, "uploaded_at": 1,
             "readings": [reading("M2", 1.0), reading("M3", 2.0)]}
    assert decode_into(columns, serde, serde.encode(METER_READING_BATCH, batch), "s") == []
    assert columns.meter_ids == ["M1", "M2", "M3"] and len(columns) == 3
    ts, kwh, interval = columns.arrays()
    assert kwh.tolist() == [0.5, 1.0, 2.0] and interval.tolist() == [900] * 3 and ts.dtype.kind == "i"


def test_a_bad_reading_in_a_batch_is_rejected_alone_with_its_reason():
    columns = ReadingColumns()
    rejected = columns.extend([reading("M1"), reading("M2", float("inf")), reading("M3", float("nan")),
                               reading("M4", interval_seconds=0)], "topic:r[0]@5", now_ms=NOW_MS)
    assert columns.meter_ids == ["M1"]
    assert [r.reason for r in rejected] == ["meter M2: energy_kwh is not a finite number (inf)",
                                            "meter M3: energy_kwh is not a finite number (nan)",
                                            "meter M4: interval_seconds must be positive (0)"]
    assert all(r.source == "topic:r[0]@5" and r.raw_text for r in rejected)


def test_negative_energy_is_a_reading_solar_prosumers_export_net():
    """A net meter reads below zero while its panels export: a reading to score, not a bad one."""
    columns = ReadingColumns()
    assert columns.extend([reading("M1", -0.75), reading("M2", 0.5)], "s", now_ms=NOW_MS) == []
    assert columns.extend([reading("M3", -2.0), reading("M4", float("nan"))], "s", now_ms=NOW_MS)[0].reason \
        == "meter M4: energy_kwh is not a finite number (nan)"
    assert columns.kwh == [-0.75, 0.5, -2.0]
    assert reading_problem(reading(kwh=-3.5), NOW_MS) is None


@pytest.mark.parametrize("stamp,words,kind", [
    (NOW_MS + FUTURE_TOLERANCE_MS + 1, "ahead of the current time", "timestamp ahead of the clock"),  # a wrong clock
    (EARLIEST_TIMESTAMP_MS - 1, "before 2000-01-01", "timestamp before 2000"),  # a meter clock reset to 1999
    (0, "before 2000-01-01", "timestamp before 2000"),  # the epoch: a reset clock
])
def test_readings_outside_the_sane_time_window_are_rejected_with_the_reason(stamp, words, kind):
    columns = ReadingColumns()
    rejected = columns.extend([reading("M1"), reading("M2", timestamp=stamp), reading("M3")], "s", now_ms=NOW_MS)
    assert columns.meter_ids == ["M1", "M3"]
    (bad,) = rejected
    assert bad.reason.startswith("meter M2: timestamp ") and words in bad.reason, bad.reason
    assert bad.kind == kind


def test_the_tolerance_ahead_of_the_clock_can_be_given():
    """The dashboard's ingest takes its configured tolerance (WATTSUP_DASHBOARD_FUTURE_TOLERANCE_HOURS)."""
    columns = ReadingColumns()
    two_days = 2 * FUTURE_TOLERANCE_MS
    assert columns.extend([reading("M1", timestamp=NOW_MS + two_days)], "s", now_ms=NOW_MS,
                          tolerance_ms=two_days) == []
    assert columns.extend([reading("M1", timestamp=NOW_MS + 2)], "s", now_ms=NOW_MS, tolerance_ms=1)[0].kind \
        == "timestamp ahead of the clock"


def test_a_reading_within_the_tolerance_ahead_is_accepted():
    columns = ReadingColumns()
    assert columns.extend([reading("M1", timestamp=NOW_MS + FUTURE_TOLERANCE_MS)], "s", now_ms=NOW_MS) == []


@pytest.mark.parametrize("field,value,words", [
    ("meter_id", "x" * (MAX_ID_LENGTH + 1), "the limit is"),
    ("meter_id", "M7\r=cmd", "U+000D"),
    ("meter_id", "   ", "must not be empty"),
    ("feeder_id", "F\n1", "U+000A"),
    ("feeder_id", "f" * (MAX_ID_LENGTH + 1), "the limit is"),
])
def test_unusable_ids_are_rejected_with_the_shared_reason(field, value, words):
    columns = ReadingColumns()
    rejected = columns.extend([reading("M1"), {**reading("M2"), field: value}], "s", now_ms=NOW_MS)
    assert columns.meter_ids == ["M1"]
    (bad,) = rejected
    assert field in bad.reason and words in bad.reason, bad.reason
    assert bad.kind == "bad id"


def test_rejection_kinds_never_carry_a_meter_id():
    """The dead-letter metric is labelled by kind: a meter id there would make a series per meter."""
    columns = ReadingColumns()
    rejected = columns.extend([reading("M-secret", float("nan")), reading("M-secret", interval_seconds=-1),
                               reading("M-secret", timestamp=0), {**reading("M-secret"), "feeder_id": ""}],
                              "s", now_ms=NOW_MS)
    assert len(rejected) == 4 and not any("M-secret" in r.kind for r in rejected)


def test_undecodable_and_unexpected_messages_are_rejected_with_their_bytes():
    serde = SingleObjectSerde()
    columns = ReadingColumns()
    (junk,) = decode_into(columns, serde, b"not avro", "s")
    assert junk.reason.startswith("undecodable message") and junk.raw_bytes == b"not avro"
    forecast = serde.encode(FORECAST, {"meter_id": "M1", "feeder_id": "F1", "generated_at": 0, "model_version": "v",
                                       "interval_seconds": 3600, "horizon": []})
    (wrong,) = decode_into(columns, serde, forecast, "s")
    assert "unexpected record type" in wrong.reason and len(columns) == 0


def test_missing_ids_are_named():
    assert reading_problem(reading(meter=""), NOW_MS) == "missing meter_id"
    assert reading_problem(reading(feeder_id=""), NOW_MS) == "meter M1: missing feeder_id"
    assert reading_problem(reading(), NOW_MS) is None
