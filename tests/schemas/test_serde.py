"""The shared Avro serialisation: single-object encoding, clear errors, schema evolution."""

from __future__ import annotations

import copy
import json
import struct
from datetime import datetime, timezone

import pytest
from fastavro.schema import fingerprint

from schemas.serde import (
    ANOMALY, DEAD_LETTER, FORECAST, METER_READING, METER_READING_BATCH, SchemaCatalog, SchemaVersion, SerdeError,
    SingleObjectSerde,
)

TS = 1_772_409_600_000  # 2026-03-02T00:00:00Z
READING = {"meter_id": "M000001", "feeder_id": "F0001", "timestamp": TS, "energy_kwh": 0.42, "interval_seconds": 900,
           "voltage_v": 231.5, "power_kw": None, "quality_flags": ["ESTIMATED"]}
RECORDS = {
    METER_READING: READING,
    METER_READING_BATCH: {"batch_id": "F0001-1", "feeder_id": "F0001", "head_end_id": "he-1", "uploaded_at": TS,
                          "readings": [READING, {**READING, "meter_id": "M000002", "energy_kwh": 1.5}]},
    FORECAST: {"meter_id": "M000001", "feeder_id": "F0001", "generated_at": TS, "model_version": "prophet-1.5.0",
               "interval_seconds": 3600,
               "horizon": [{"timestamp": TS + 3_600_000, "expected": 0.5, "lower": 0.3, "upper": 0.8}]},
    ANOMALY: {"meter_id": "M000001", "feeder_id": "F0001", "timestamp": TS, "observed": 5.0, "expected": 1.2,
              "lower": 0.8, "upper": 1.6, "residual": 3.8, "score": 0.91, "severity": "CRITICAL", "kind": "spike",
              "causes": [{"feature": "baseline_ratio", "contribution": 0.7, "text": "usage 4.2x the usual"}],
              "model_version": "20260302T000000", "detected_at": TS + 1000},
    DEAD_LETTER: {"source": "csv:x.csv", "raw_bytes": None, "raw_text": "a,b,c", "reason": "missing meter_id",
                  "row_number": 3, "first_seen": TS},
}


@pytest.mark.parametrize("name", list(RECORDS))
def test_every_record_type_round_trips(name):
    serde = SingleObjectSerde()
    data = serde.encode(name, RECORDS[name])
    decoded_name, decoded = serde.decode(data, raw_timestamps=True)
    assert decoded_name == name
    assert decoded == RECORDS[name]


def test_header_is_the_avro_single_object_encoding():
    serde = SingleObjectSerde()
    data = serde.encode(METER_READING, READING)
    schema = serde.catalog.reader(METER_READING)
    expected = int(fingerprint(schema.canonical_form, "CRC-64-AVRO"), 16)
    assert data[:2] == b"\xc3\x01"
    assert struct.unpack("<Q", data[2:10])[0] == expected


def test_timestamps_decode_as_datetimes_unless_raw():
    serde = SingleObjectSerde()
    data = serde.encode(METER_READING, READING)
    assert serde.decode(data)[1]["timestamp"] == datetime(2026, 3, 2, tzinfo=timezone.utc)
    assert serde.decode(data, raw_timestamps=True)[1]["timestamp"] == TS


@pytest.mark.parametrize("data, message", [
    (b"", "too short"),
    (b"\xc3\x01\x00", "too short"),
    (b"\x00\x00\x00\x00\x01hello world", "not Avro single-object encoded: header 0000"),
    (b"\xc3\x01" + b"\x11" * 8 + b"body", "unknown writer schema fingerprint"),
])
def test_bad_messages_raise_clear_errors(data, message):
    with pytest.raises(SerdeError, match=message):
        SingleObjectSerde().decode(data)


def test_truncated_body_is_an_error():
    data = SingleObjectSerde().encode(METER_READING, READING)
    with pytest.raises(SerdeError, match="cannot decode io.wattsup.readings.MeterReading"):
        SingleObjectSerde().decode(data[:14])


def test_encoding_a_bad_record_names_the_field():
    with pytest.raises(SerdeError, match="energy_kwh"):
        SingleObjectSerde().encode(METER_READING, {**READING, "energy_kwh": "lots"})
    with pytest.raises(SerdeError, match="MeterReading"):
        SingleObjectSerde().encode(METER_READING, {k: v for k, v in READING.items() if k != "meter_id"})


def _v2_reading_schema() -> SchemaVersion:
    """MeterReading v2: adds an optional ``tariff_code`` field with a default."""
    raw = copy.deepcopy(SingleObjectSerde().catalog.reader(METER_READING).raw)
    raw["fields"].append({"name": "tariff_code", "type": ["null", "string"], "default": None,
                          "doc": "Tariff the interval was billed under."})
    return SchemaVersion(name=METER_READING, raw=raw)


def test_v1_data_is_read_by_a_v2_reader_that_adds_an_optional_field():
    writer = SingleObjectSerde(SchemaCatalog())  # today's schema is v1
    v1_bytes = writer.encode(METER_READING, READING)

    reader_catalog = SchemaCatalog()
    reader_catalog.add(_v2_reading_schema(), as_current=True)
    name, record = SingleObjectSerde(reader_catalog).decode(v1_bytes, raw_timestamps=True)
    assert name == METER_READING
    assert record == {**READING, "tariff_code": None}


def test_v2_data_is_read_by_a_v1_reader_that_knows_the_v2_writer_schema():
    v2 = _v2_reading_schema()
    writer_catalog = SchemaCatalog()
    writer_catalog.add(v2, as_current=True)
    v2_bytes = SingleObjectSerde(writer_catalog).encode(METER_READING, {**READING, "tariff_code": "T2"})

    v1_reader = SchemaCatalog()
    with pytest.raises(SerdeError, match="unknown writer schema fingerprint"):
        SingleObjectSerde(v1_reader).decode(v2_bytes)
    v1_reader.add(v2)  # shipped under schemas/avro/versions/, not made current
    name, record = SingleObjectSerde(v1_reader).decode(v2_bytes, raw_timestamps=True)
    assert record == READING  # the v1 reader ignores the new field


def test_versions_directory_is_loaded_as_writer_schemas(tmp_path):
    import shutil

    from schemas.serde import SCHEMA_DIR

    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, tmp_path / path.name)
    old = tmp_path / "versions" / "0"
    old.mkdir(parents=True)
    v0 = json.loads((SCHEMA_DIR / "meter_reading.avsc").read_text())
    v0["fields"] = [f for f in v0["fields"] if f["name"] != "power_kw"]  # an older MeterReading without power_kw
    (old / "meter_reading.avsc").write_text(json.dumps(v0))
    catalog = SchemaCatalog(tmp_path)
    old_version = next(v for v in catalog.by_fingerprint.values()
                       if v.name == METER_READING and v is not catalog.current[METER_READING])
    from schemas.serde import SINGLE_OBJECT_MAGIC, schemaless_encode

    body = schemaless_encode(old_version, {k: v for k, v in READING.items() if k != "power_kw"})
    _, record = SingleObjectSerde(catalog).decode(SINGLE_OBJECT_MAGIC + old_version.fingerprint + body,
                                                  raw_timestamps=True)
    assert record == {**READING, "power_kw": None}
