"""Decoding readings messages into columns: a bad reading is rejected with its reason, its batch-mates go on."""

from __future__ import annotations

from readings.columns import ReadingColumns, decode_into, reading_problem
from schemas.serde import FORECAST, METER_READING, METER_READING_BATCH, SingleObjectSerde


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
    rejected = columns.extend([reading("M1"), reading("M2", -1.0), reading("M3", float("nan")),
                               reading("M4", interval_seconds=0)], "topic:r[0]@5")
    assert columns.meter_ids == ["M1"]
    assert [r.reason for r in rejected] == ["meter M2: negative energy_kwh -1.0",
                                            "meter M3: energy_kwh is not a finite number (nan)",
                                            "meter M4: interval_seconds must be positive (0)"]
    assert all(r.source == "topic:r[0]@5" and r.raw_text for r in rejected)


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
    assert reading_problem(reading(meter="")) == "missing meter_id"
    assert reading_problem(reading(feeder_id="")) == "meter M1: missing feeder_id"
    assert reading_problem(reading()) is None
