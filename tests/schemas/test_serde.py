"""The shared Avro serialisation: single-object encoding, clear errors, schema evolution."""

from __future__ import annotations

import copy
import json
import struct
from datetime import datetime, timezone

import pytest
from fastavro.schema import fingerprint

from schemas.serde import (
    ANOMALY, DEAD_LETTER, FEEDBACK_MARK, FORECAST, INCIDENT, METER_READING, METER_READING_BATCH, SCHEMA_DIR, SINGLE_OBJECT_MAGIC, SchemaCatalog,
    SchemaVersion, SerdeError, SingleObjectSerde, make_serde, parse_schema_version, schemaless_encode,
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
              "lower": 0.8, "upper": 1.6, "residual": 3.8, "band_residual": 9.5, "baseline": 1.1, "score": 0.91, "severity": "CRITICAL", "kind": "spike",
              "causes": [{"feature": "baseline_ratio", "contribution": 0.7, "text": "usage 4.2x the usual"}],
              "model_version": "20260302T000000", "detected_at": TS + 1000, "suppressed_by": None},
    INCIDENT: {"incident_id": "inc-0123456789abcdef0123", "meter_id": "M000001", "feeder_id": "F0001", "kind": "outage",
               "status": "closed", "event": "closed", "started": TS, "last_seen": TS + 900_000, "ended": TS + 3_600_000,
               "closed_by": "recovered", "interval_seconds": 900, "peak_severity": "CRITICAL", "readings": 2,
               "energy_delta_kwh": -0.6, "worst_timestamp": TS + 900_000, "worst_score": 0.8,
               "causes": [{"feature": "zero_hours", "contribution": 1.0, "text": "no consumption for 2.0 h"}],
               "revision": 5, "updated": TS + 3_600_000},
    FEEDBACK_MARK: {"meter_id": "M000001", "kind": "outage", "verdict": "false_alarm", "created_at": TS,
                    "feeder_id": "F0001", "incident_id": "inc-0123456789abcdef0123", "started": TS,
                    "ended": TS + 900_000, "expires_at": TS + 86_400_000, "revoked": False, "close_incident": True,
                    "operator": "ops", "note": "planned work"},
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


def _crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification writes it (Schema Fingerprints section)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


# Java's SchemaNormalization.parsingFingerprint64 (a signed long) for schemas in canonical form,
# from Apache Avro's shared fingerprint test data.
@pytest.mark.parametrize("canonical, java_fingerprint", [
    ('"null"', 7195948357588979594),
    ('"int"', 8247732601305521295),
    ('"string"', -8142146995180207161),
    ('{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771),
])
def test_fingerprint_matches_avro_java(canonical, java_fingerprint):
    schema = SchemaVersion(name="x", raw=json.loads(canonical))
    assert schema.canonical_form == canonical
    assert schema.fingerprint64 == java_fingerprint
    # The single-object header carries it little-endian: C3 01 + these 8 bytes.
    assert schema.fingerprint == struct.pack("<q", java_fingerprint)
    assert struct.unpack("<Q", schema.fingerprint)[0] == _crc64_avro(canonical.encode())


@pytest.mark.parametrize("name", list(RECORDS))
def test_header_is_the_avro_single_object_encoding(name):
    serde = SingleObjectSerde()
    data = serde.encode(name, RECORDS[name])
    schema = serde.catalog.reader(name)
    assert data[:2] == b"\xc3\x01"
    # Little-endian CRC-64-AVRO of the Parsing Canonical Form: the bytes fastavro's hex spells out ...
    assert data[2:10] == bytes.fromhex(fingerprint(schema.canonical_form, "CRC-64-AVRO"))
    # ... and the value the specification's algorithm computes.
    assert struct.unpack("<Q", data[2:10])[0] == _crc64_avro(schema.canonical_form.encode())
    assert data[10:] == schemaless_encode(schema, RECORDS[name])


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


# --- added with the registry work: byte-level checks, catalog loading, evolution of shipped versions ---


def test_nested_timestamps_follow_raw_timestamps():
    serde = SingleObjectSerde()
    for name, path in ((METER_READING_BATCH, ("readings", 0, "timestamp")), (FORECAST, ("horizon", 0, "timestamp"))):
        data = serde.encode(name, RECORDS[name])
        as_datetime, as_int = serde.decode(data)[1], serde.decode(data, raw_timestamps=True)[1]
        for key in path:
            as_datetime, as_int = as_datetime[key], as_int[key]
        assert isinstance(as_datetime, datetime) and as_datetime.tzinfo is not None
        assert isinstance(as_int, int) and as_int == int(as_datetime.timestamp() * 1000)


def test_wrong_magic_from_the_registry_format_says_so():
    with pytest.raises(SerdeError, match="header 0000 is not c301.*schema-registry wire format"):
        SingleObjectSerde().decode(b"\x00\x00\x00\x00\x07" + b"\x02" * 20)


def test_unknown_fingerprint_names_it_and_the_remedy():
    data = SINGLE_OBJECT_MAGIC + struct.pack("<Q", 0x0123456789ABCDEF) + b"\x02x"
    with pytest.raises(SerdeError, match=r"fingerprint 0x0123456789abcdef: .*schemas/avro/versions/"):
        SingleObjectSerde().decode(data)


@pytest.mark.parametrize("cut", [0, 1, 5])
def test_truncated_body_says_truncated(cut):
    data = SingleObjectSerde().encode(ANOMALY, RECORDS[ANOMALY])
    with pytest.raises(SerdeError, match="cannot decode io.wattsup.anomalies.Anomaly body: truncated message"):
        SingleObjectSerde().decode(data[: 10 + cut])


def test_trailing_bytes_are_an_error_not_silently_ignored():
    """A body longer than its record means the header names the wrong schema (or corruption)."""
    data = SingleObjectSerde().encode(METER_READING, READING)
    with pytest.raises(SerdeError, match="3 unexpected bytes after the record"):
        SingleObjectSerde().decode(data + b"abc")


def test_byte_reversed_fingerprints_from_older_builds_still_decode(caplog):
    """Builds before the byte-order fix wrote the fingerprint big-endian; their records stay readable."""
    data = SingleObjectSerde().encode(METER_READING, READING)
    legacy = data[:2] + data[2:10][::-1] + data[10:]
    serde = SingleObjectSerde()
    with caplog.at_level("WARNING", logger="schemas.serde"):
        assert serde.decode(legacy, raw_timestamps=True) == (METER_READING, READING)
        serde.decode(legacy)
    assert sum("byte-reversed" in r.getMessage() for r in caplog.records) == 1


def test_memoryview_input_decodes():
    data = SingleObjectSerde().encode(METER_READING, READING)
    assert SingleObjectSerde().decode(memoryview(data), raw_timestamps=True) == (METER_READING, READING)


def test_unknown_record_type_is_named():
    with pytest.raises(SerdeError, match="unknown record type 'io.wattsup.Nope'"):
        SingleObjectSerde().encode("io.wattsup.Nope", {})


def test_bad_nested_field_is_named():
    batch = copy.deepcopy(RECORDS[METER_READING_BATCH])
    batch["readings"][1]["energy_kwh"] = "lots"
    with pytest.raises(SerdeError, match="MeterReadingBatch: readings is"):
        SingleObjectSerde().encode(METER_READING_BATCH, batch)


def _copy_current_schemas(target):
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, target / path.name)


def test_a_version_directory_keeps_the_batch_that_embeds_an_old_reading(tmp_path):
    """Changing MeterReading changes MeterReadingBatch's fingerprint too: both old files are kept."""
    _copy_current_schemas(tmp_path)
    old = tmp_path / "versions" / "1"
    old.mkdir(parents=True)
    v1 = json.loads((SCHEMA_DIR / "meter_reading.avsc").read_text())
    v1["fields"] = [f for f in v1["fields"] if f["name"] != "power_kw"]
    # Written batch-first on purpose: the loader must not depend on file order.
    (old / "meter_reading_batch.avsc").write_text((SCHEMA_DIR / "meter_reading_batch.avsc").read_text())
    (old / "meter_reading.avsc").write_text(json.dumps(v1))
    catalog = SchemaCatalog(tmp_path)
    old_batch = next(v for v in catalog.by_fingerprint.values()
                     if v.name == METER_READING_BATCH and v is not catalog.current[METER_READING_BATCH])
    assert [f["name"] for f in old_batch.raw["fields"][4]["type"]["items"]["fields"]].count("power_kw") == 0

    v1_reading = {k: v for k, v in READING.items() if k != "power_kw"}
    batch = {**RECORDS[METER_READING_BATCH], "readings": [v1_reading]}
    data = SINGLE_OBJECT_MAGIC + old_batch.fingerprint + schemaless_encode(old_batch, batch)
    name, record = SingleObjectSerde(catalog).decode(data, raw_timestamps=True)
    assert name == METER_READING_BATCH
    assert record["readings"] == [{**v1_reading, "power_kw": None}]


def test_a_version_directory_may_borrow_unchanged_types_from_the_current_schemas(tmp_path):
    """versions/1 holding only the batch: the MeterReading it names is today's."""
    _copy_current_schemas(tmp_path)
    old = tmp_path / "versions" / "1"
    old.mkdir(parents=True)
    v1_batch = json.loads((SCHEMA_DIR / "meter_reading_batch.avsc").read_text())
    v1_batch["fields"] = [f for f in v1_batch["fields"] if f["name"] != "head_end_id"]
    (old / "meter_reading_batch.avsc").write_text(json.dumps(v1_batch))
    catalog = SchemaCatalog(tmp_path)
    assert len(catalog.by_fingerprint) == len(catalog.current) + 1


def test_a_version_directory_naming_an_unknown_type_is_a_clear_error(tmp_path):
    _copy_current_schemas(tmp_path)
    old = tmp_path / "versions" / "1"
    old.mkdir(parents=True)
    (old / "bad.avsc").write_text(json.dumps(
        {"type": "record", "name": "Bad", "namespace": "x", "fields": [{"name": "a", "type": "x.Missing"}]}))
    with pytest.raises(SerdeError, match=r"bad.avsc: unknown named type x.Missing"):
        SchemaCatalog(tmp_path)


def test_shipped_versions_resolve_to_current():
    """Every writer schema shipped (current and versions/) round-trips generated records.

    Today only version 1 exists; once versions/<n>/ holds superseded schemas this decodes
    their records with today's reader, which is what a compatible evolution must allow.
    """
    from fastavro.utils import generate_many

    catalog = SchemaCatalog()
    serde = SingleObjectSerde(catalog)
    for writer in catalog.by_fingerprint.values():
        for record in generate_many(writer.parsed_raw_time, 20):
            data = SINGLE_OBJECT_MAGIC + writer.fingerprint + schemaless_encode(writer, record)
            name, decoded = serde.decode(data, raw_timestamps=True)
            assert name == writer.name
            if catalog.current[name] is writer:
                assert decoded == record


def test_parse_schema_version_accepts_registry_text():
    text = json.dumps(SingleObjectSerde().catalog.reader(METER_READING).raw)
    assert parse_schema_version(text).fingerprint == SingleObjectSerde().catalog.reader(METER_READING).fingerprint
    with pytest.raises(SerdeError, match="cannot parse Avro schema"):
        parse_schema_version('{"type": "record", "name": "x", "fields": [{"name": "a", "type": "nope"}]}')


def test_make_serde_picks_the_wire_format():
    assert make_serde(None).wire_format == "single-object"
    registry_serde = make_serde("http://127.0.0.1:9/apis/ccompat/v7", **{"basic.auth.user.info": "u:p"})
    assert registry_serde.wire_format == "confluent"  # no request is made until the first encode/decode


@pytest.mark.parametrize("name", list(RECORDS))
def test_schemas_are_plain_self_contained_avro(name):
    """What a registry is sent: no fastavro bookkeeping keys, every named type defined inline."""
    schema = SingleObjectSerde().catalog.reader(name)
    text = json.dumps(schema.raw)
    assert "__fastavro" not in text and "__named_schemas" not in text
    assert parse_schema_version(text).fingerprint == schema.fingerprint  # parses with no other schema known


def test_parsed_schemas_are_marked_so_fastavro_does_not_reparse_per_message():
    """Without the marker fastavro re-parses the schema on each call: twice the encode/decode time."""
    schema = SingleObjectSerde().catalog.reader(METER_READING_BATCH)
    assert schema.parsed.get("__fastavro_parsed") and schema.parsed_raw_time.get("__fastavro_parsed")


def test_version_1_anomaly_reads_with_the_new_fields_empty():
    """An anomaly written before schema version 2 (no band_residual, no baseline) still decodes."""
    catalog = SchemaCatalog()
    v1 = [w for w in catalog.by_fingerprint.values() if w.name == ANOMALY
          and "baseline" not in [f["name"] for f in w.raw["fields"]]]
    assert len(v1) == 1
    old = {k: v for k, v in RECORDS[ANOMALY].items() if k not in ("band_residual", "baseline", "suppressed_by")}
    data = SINGLE_OBJECT_MAGIC + v1[0].fingerprint + schemaless_encode(v1[0], old)
    name, decoded = SingleObjectSerde(catalog).decode(data, raw_timestamps=True)
    assert name == ANOMALY
    assert decoded == {**old, "band_residual": None, "baseline": None, "suppressed_by": None}


def test_version_2_anomaly_reads_as_not_suppressed():
    """An anomaly written before schema version 3 (no suppressed_by) decodes as one that stands."""
    catalog = SchemaCatalog()
    v2 = [w for w in catalog.by_fingerprint.values() if w.name == ANOMALY and w is not catalog.current[ANOMALY]
          and "baseline" in [f["name"] for f in w.raw["fields"]]]
    assert len(v2) == 1
    old = {k: v for k, v in RECORDS[ANOMALY].items() if k != "suppressed_by"}
    data = SINGLE_OBJECT_MAGIC + v2[0].fingerprint + schemaless_encode(v2[0], old)
    assert SingleObjectSerde(catalog).decode(data, raw_timestamps=True) == (ANOMALY, {**old, "suppressed_by": None})
