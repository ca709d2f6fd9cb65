"""The vectorised encoder writes exactly the bytes the serde writes, and batches the way head-ends do."""

from __future__ import annotations

import copy
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from schemas import reading_encoder
from schemas.reading_encoder import (
    ReadingEncoder,
    avro_long,
    encode_reading_bodies,
    feeder_batches,
    field_plan,
    plan_batches,
    reading_records,
    wire_header,
)
from schemas.serde import (
    METER_READING,
    METER_READING_BATCH,
    SerdeError,
    SingleObjectSerde,
    schemaless_encode,
)
from simulation.fleet import FleetConfig, simulate_fleet


@pytest.fixture(autouse=True)
def fixed_upload_time(monkeypatch):
    """Batches carry uploaded_at = now; pin it so two encodings of one frame can be compared."""
    monkeypatch.setattr(reading_encoder.time, "time", lambda: 1_767_225_600.123)


@pytest.fixture(scope="module")
def fleet_readings() -> pd.DataFrame:
    return simulate_fleet(FleetConfig(meters=300, days=2, meters_per_feeder=40, late_rate=0.03, seed=12)).readings


def _odd_frame() -> pd.DataFrame:
    """Values at the edges of every encoding: multi-byte ids, extreme times, NaN optionals, several flags."""
    return pd.DataFrame({
        "timestamp": pd.to_datetime([0, -1, 2**40, 1_767_225_600_000, 63, 64], unit="ms", utc=True),
        "meter_id": ["M1", "Zähler-ß", "m" * 200, "", "M1", "x"],
        "feeder_id": ["F1", "F€", "F1", "F2", "F1", "F2"],
        "kwh": [0.0, 1e-300, 123456.789, -0.0, float("nan"), 0.1],
        "interval_seconds": [900, 1, 2**31 - 1, 0, 63, 64],
        "quality_flags": ["", "LATE", "LATE;ESTIMATED", "A;;B", "", "CLOCK_ADJUSTED"],
        "voltage_v": [230.1, np.nan, 0.0, np.nan, 1.5, np.nan],
        "power_kw": [np.nan] * 6,
    })


@pytest.mark.parametrize("value", [0, 1, -1, 63, -64, 64, 2**31 - 1, -(2**31), 2**62, -(2**63), 2**63 - 1])
def test_avro_long_matches_fastavro(value):
    from io import BytesIO

    from fastavro.io.binary_encoder import BinaryEncoder

    buf = BytesIO()
    encoder = BinaryEncoder(buf)
    encoder.write_long(value)
    encoder.flush()
    assert avro_long(value) == buf.getvalue()


def _plan() -> list[tuple[str, str]]:
    return field_plan(SingleObjectSerde().catalog.reader(METER_READING).raw)


def test_reading_bodies_are_byte_identical_to_fastavro():
    frame = _odd_frame()
    blob, offsets = encode_reading_bodies(frame, _plan())
    schema = SingleObjectSerde().catalog.reader(METER_READING)
    for i, record in enumerate(reading_records(frame)):
        assert blob[offsets[i]:offsets[i + 1]] == schemaless_encode(schema, record), record
    assert offsets[-1] == len(blob)


def test_single_messages_equal_serde_encoding(fleet_readings):
    serde = SingleObjectSerde()
    encoder = ReadingEncoder(serde)
    assert encoder.vectorised
    messages = [m for chunk in encoder.readings(fleet_readings) for m in zip(chunk.keys, chunk.values)]
    records = list(reading_records(fleet_readings))
    assert len(messages) == len(records) == len(fleet_readings)
    for (key, value), record in zip(messages, records):
        assert key == record["feeder_id"].encode()
        assert value == serde.encode(METER_READING, record)
    late = fleet_readings["quality_flags"].eq("LATE").to_numpy()
    assert serde.decode(messages[int(np.flatnonzero(late)[0])][1])[1]["quality_flags"] == ["LATE"]


def test_batch_messages_equal_serde_encoding(fleet_readings):
    serde = SingleObjectSerde()
    fast = [m for chunk in ReadingEncoder(serde).batches(fleet_readings, head_end_id="he-1") for m in
            zip(chunk.keys, chunk.values, chunk.readings)]
    slow = [m for chunk in ReadingEncoder(serde, vectorised=False).batches(fleet_readings, head_end_id="he-1") for m in
            zip(chunk.keys, chunk.values, chunk.readings)]
    assert fast == slow
    dicts = list(feeder_batches(fleet_readings, head_end_id="he-1"))
    assert [v for _, v, _ in fast] == [serde.encode(METER_READING_BATCH, b) for b in dicts]
    assert [k for k, _, _ in fast] == [b["feeder_id"].encode() for b in dicts]
    assert [n for _, _, n in fast] == [len(b["readings"]) for b in dicts]


def test_odd_values_round_trip_through_the_serde():
    serde = SingleObjectSerde()
    frame = _odd_frame()
    values = [v for chunk in ReadingEncoder(serde).readings(frame) for v in chunk.values]
    decoded = [serde.decode(v, raw_timestamps=True)[1] for v in values]
    assert [d["meter_id"] for d in decoded] == frame["meter_id"].tolist()
    assert [d["quality_flags"] for d in decoded][2:4] == [["LATE", "ESTIMATED"], ["A", "B"]]
    assert [d["voltage_v"] for d in decoded][:3] == [230.1, None, 0.0]
    assert decoded[1]["timestamp"] == -1 and decoded[2]["interval_seconds"] == 2**31 - 1


def test_one_batch_per_feeder_and_interval_even_with_late_readings(fleet_readings):
    assert fleet_readings["quality_flags"].eq("LATE").sum() > 100
    batches = list(feeder_batches(fleet_readings))
    intervals = fleet_readings["timestamp"].nunique()
    assert len(batches) == 8 * intervals  # 300 meters, 40 per feeder
    assert sum(len(b["readings"]) for b in batches) == len(fleet_readings)
    assert all({r["feeder_id"] for r in b["readings"]} == {b["feeder_id"]} for b in batches)
    assert len({b["batch_id"] for b in batches}) == len(batches)
    # Late readings ride in the upload of the interval they were delivered with.
    late_batches = [b for b in batches if any(r["quality_flags"] == ["LATE"] for r in b["readings"])]
    assert all(len({r["timestamp"] for r in b["readings"]}) > 1 for b in late_batches)
    # Flattened, the batches keep every meter's readings in delivery order.
    flat = pd.DataFrame([r for b in batches for r in b["readings"]])
    original = fleet_readings.assign(ms=pd.DatetimeIndex(fleet_readings["timestamp"]).as_unit("ms").asi8)
    for meter in ["M000001", "M000150", "M000300"]:
        assert flat.loc[flat["meter_id"] == meter, "timestamp"].tolist() == \
            original.loc[original["meter_id"] == meter, "ms"].tolist()


def test_big_feeders_are_split_under_the_batch_limit():
    frame = simulate_fleet(FleetConfig(meters=120, days=0.25, interval=timedelta(hours=1), meters_per_feeder=120,
                                       missing_rate=0, late_rate=0)).readings
    plan = plan_batches(frame, max_readings=50)
    sizes = [end - start for start, end in plan.bounds]
    assert sizes == [50, 50, 20] * 6
    assert len(set(plan.batch_ids)) == len(plan.batch_ids)


def test_missing_ids_are_refused_with_the_field_name():
    frame = _odd_frame()
    frame.loc[2, "feeder_id"] = None
    with pytest.raises(SerdeError, match="feeder_id is missing"):
        encode_reading_bodies(frame, _plan())


class _RegistryLikeSerde:
    """A stand-in with the registry serde's interface; only its header matters here."""

    wire_format = "confluent"

    def __init__(self) -> None:
        self.catalog = SingleObjectSerde().catalog

    def schema_id(self, name: str) -> int:
        return {METER_READING: 7, METER_READING_BATCH: 8}[name]


def test_registry_wire_format_header():
    serde = _RegistryLikeSerde()
    assert wire_header(serde, METER_READING) == b"\x00\x00\x00\x00\x07"
    assert wire_header(serde, METER_READING_BATCH) == b"\x00\x00\x00\x00\x08"
    encoder = ReadingEncoder(serde)
    assert encoder.vectorised
    value = next(encoder.readings(_odd_frame())).values[0]
    schema = SingleObjectSerde().catalog.reader(METER_READING)
    assert value == b"\x00\x00\x00\x00\x07" + schemaless_encode(schema, next(reading_records(_odd_frame())))


def test_unknown_serde_falls_back_to_its_own_encode():
    class PlainSerde:
        def encode(self, name: str, record: dict) -> bytes:
            return f"{name}:{record['meter_id']}".encode()

    encoder = ReadingEncoder(PlainSerde())
    assert not encoder.vectorised
    chunk = next(encoder.readings(_odd_frame()))
    assert chunk.values[0] == f"{METER_READING}:M1".encode()


def _evolved_serde(extra_field: dict) -> SingleObjectSerde:
    """A serde whose current MeterReading (and the batch embedding it) has one more field."""
    from schemas.serde import SchemaCatalog, parse_schema_version

    serde = SingleObjectSerde(SchemaCatalog())  # its own catalog: the shared one stays as it is
    reading = copy.deepcopy(serde.catalog.reader(METER_READING).raw)
    reading["fields"].append(extra_field)
    batch = copy.deepcopy(serde.catalog.reader(METER_READING_BATCH).raw)
    batch["fields"][-1]["type"]["items"] = reading
    serde.catalog.add(parse_schema_version(reading), as_current=True)
    serde.catalog.add(parse_schema_version(batch), as_current=True)
    return serde


def test_the_encoder_follows_the_schema_files_when_a_field_is_added(fleet_readings):
    serde = _evolved_serde({"name": "reactive_kvarh", "type": ["null", "double"], "default": None})
    frame = fleet_readings.head(300).assign(reactive_kvarh=np.where(np.arange(300) % 3, 0.25, np.nan))
    encoder = ReadingEncoder(serde)
    assert encoder.vectorised and encoder.reading_plan[-1] == ("reactive_kvarh", "optional double")
    values = [v for chunk in encoder.batches(frame, head_end_id="he") for v in chunk.values]
    decoded = [serde.decode(v, raw_timestamps=True)[1] for v in values]
    got = [r["reactive_kvarh"] for b in decoded for r in b["readings"]]
    assert got.count(0.25) == 200 and got.count(None) == 100


def test_a_field_type_the_encoder_cannot_write_falls_back_to_the_serde(fleet_readings):
    serde = _evolved_serde({"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}})
    encoder = ReadingEncoder(serde)
    assert not encoder.vectorised
    chunk = next(encoder.readings(fleet_readings.head(5).assign(tags=[{}] * 5)))
    assert serde.decode(chunk.values[0], raw_timestamps=True)[1]["tags"] == {}
