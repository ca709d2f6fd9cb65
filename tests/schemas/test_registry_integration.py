"""RegistrySerde against a real Confluent-compatible registry (Apicurio, started by a fixture).

Checks the wire format byte for byte, that confluent-kafka's own Avro serializer and
deserializer agree with it, and that schema evolution works through the registry in both
directions: the registry hands any reader the exact writer schema, so unlike the single-object
path an old reader needs no local copy of a newer schema.
"""

from __future__ import annotations

import copy
import json

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.registry import RegistrySerde
from schemas.serde import (
    METER_READING, METER_READING_BATCH, SchemaCatalog, SchemaVersion, SerdeError, SingleObjectSerde, parse_schema_version,
)

from .test_serde import READING, RECORDS

pytestmark = pytest.mark.integration


def _v2_catalog() -> SchemaCatalog:
    """Today's schemas with MeterReading v2: an optional ``tariff_code`` (default null) added."""
    catalog = SchemaCatalog()
    raw = copy.deepcopy(catalog.reader(METER_READING).raw)
    raw["fields"].append({"name": "tariff_code", "type": ["null", "string"], "default": None,
                          "doc": "Tariff the interval was billed under."})
    catalog.add(SchemaVersion(name=METER_READING, raw=raw), as_current=True)
    return catalog


@pytest.fixture
def client(schema_registry) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": schema_registry.url})


@pytest.mark.parametrize("name", list(RECORDS))
def test_every_record_type_round_trips(schema_registry, client, name):
    writer = RegistrySerde(schema_registry.url)
    data = writer.encode(name, RECORDS[name])

    registered = client.get_latest_version(name)  # record-name strategy: subject == full name
    assert data[:1] == b"\x00"
    assert int.from_bytes(data[1:5], "big") == registered.schema_id == writer.schema_id(name)
    # The registry may re-serialise the text (Apicurio does); the schema itself must be ours.
    assert parse_schema_version(registered.schema.schema_str).fingerprint == writer.catalog.reader(name).fingerprint
    assert "__fastavro" not in registered.schema.schema_str and "__named_schemas" not in registered.schema.schema_str

    reader = RegistrySerde(schema_registry.url)  # fresh caches: fetches the writer schema by id
    assert reader.decode(data, raw_timestamps=True) == (name, RECORDS[name])
    decoded_name, with_datetimes = reader.decode(data)
    assert decoded_name == name
    assert with_datetimes != RECORDS[name]  # timestamps came back as datetimes


def test_registering_again_returns_the_same_id(schema_registry):
    first = RegistrySerde(schema_registry.url).schema_id(METER_READING_BATCH)
    assert RegistrySerde(schema_registry.url).schema_id(METER_READING_BATCH) == first
    assert RegistrySerde(schema_registry.url, auto_register=False).schema_id(METER_READING_BATCH) == first


def test_confluent_serializer_and_deserializer_agree(schema_registry, client):
    """Java/Connect/ksqlDB consumers see exactly what confluent's own Avro serde would write."""
    ctx = SerializationContext("wattsup.readings", MessageField.VALUE)
    ours = RegistrySerde(schema_registry.url)
    schema_text = json.dumps(ours.catalog.reader(METER_READING).raw)
    theirs = AvroSerializer(client, schema_text, conf={"subject.name.strategy": record_subject_name_strategy})

    assert theirs(READING, ctx) == ours.encode(METER_READING, READING)
    deserialized = AvroDeserializer(client)(ours.encode(METER_READING, READING), ctx)
    assert {**deserialized, "timestamp": int(deserialized["timestamp"].timestamp() * 1000)} == READING


def test_v1_data_is_read_by_a_v2_reader(schema_registry):
    v1_bytes = RegistrySerde(schema_registry.url).encode(METER_READING, READING)
    v2_reader = RegistrySerde(schema_registry.url, catalog=_v2_catalog())
    assert v2_reader.decode(v1_bytes, raw_timestamps=True) == (METER_READING, {**READING, "tariff_code": None})


def test_v2_data_is_read_by_a_v1_reader_without_a_local_copy_of_v2(schema_registry):
    v2_writer = RegistrySerde(schema_registry.url, catalog=_v2_catalog())
    v2_bytes = v2_writer.encode(METER_READING, {**READING, "tariff_code": "T2"})
    assert v2_writer.schema_id(METER_READING) != RegistrySerde(schema_registry.url).schema_id(METER_READING)

    v1_reader = RegistrySerde(schema_registry.url)  # the shipped catalog: v1 only
    assert v1_reader.decode(v2_bytes, raw_timestamps=True) == (METER_READING, READING)
    assert RegistrySerde(schema_registry.url, catalog=_v2_catalog()).decode(v2_bytes, raw_timestamps=True) == (
        METER_READING, {**READING, "tariff_code": "T2"})


def test_an_incompatible_schema_is_refused_with_a_serde_error(schema_registry, client):
    client.set_compatibility(METER_READING_BATCH, "BACKWARD")
    catalog = SchemaCatalog()
    raw = copy.deepcopy(catalog.reader(METER_READING_BATCH).raw)
    raw["fields"].append({"name": "site", "type": "string"})  # required and no default: breaks old data
    catalog.add(SchemaVersion(name=METER_READING_BATCH, raw=raw), as_current=True)
    with pytest.raises(SerdeError, match="rejects the current io.wattsup.readings.MeterReadingBatch schema as incompatible"):
        RegistrySerde(schema_registry.url, catalog=catalog).encode(METER_READING_BATCH, RECORDS[METER_READING_BATCH])


def test_an_unregistered_schema_without_auto_registration_is_a_serde_error(schema_registry):
    catalog = SchemaCatalog()
    raw = copy.deepcopy(catalog.reader(METER_READING).raw)
    raw["doc"] = "A version nobody registered."
    raw["fields"].append({"name": "never_registered", "type": ["null", "int"], "default": None})
    catalog.add(SchemaVersion(name=METER_READING, raw=raw), as_current=True)
    with pytest.raises(SerdeError, match="not registered under subject 'io.wattsup.readings.MeterReading'"):
        RegistrySerde(schema_registry.url, catalog=catalog, auto_register=False).encode(METER_READING, READING)


def test_an_unknown_schema_id_is_a_serde_error(schema_registry):
    with pytest.raises(SerdeError, match="unknown schema id 987654: the registry at .* does not have it"):
        RegistrySerde(schema_registry.url).decode(b"\x00" + (987654).to_bytes(4, "big") + b"\x02")


def test_single_object_and_registry_messages_share_a_topic_during_migration(schema_registry):
    serde = RegistrySerde(schema_registry.url)
    old = SingleObjectSerde().encode(METER_READING, READING)
    new = serde.encode(METER_READING, READING)
    assert serde.decode(old, raw_timestamps=True) == serde.decode(new, raw_timestamps=True) == (METER_READING, READING)


def test_launcher_refuses_a_taken_port_and_stops_idempotently(schema_registry, tmp_path):
    from deploy.registry.launcher import RegistryError, RegistryLauncher

    second = RegistryLauncher(data_dir=tmp_path, port=schema_registry.port)
    with pytest.raises(RegistryError, match=f"port {schema_registry.port} on 127.0.0.1 is already in use"):
        second.start(timeout=5)
    assert second.stop() is False  # nothing of its own was running
    assert schema_registry.answers()


def test_registry_listens_on_loopback_only(schema_registry):
    """Quarkus' management interface defaults to 0.0.0.0:9000; the launcher moves it."""
    assert schema_registry.host == "127.0.0.1"
    assert schema_registry.management_port not in (None, 9000)
    assert f"Management interface listening on http://127.0.0.1:{schema_registry.management_port}" in (
        schema_registry.log_file.read_text(errors="replace"))
