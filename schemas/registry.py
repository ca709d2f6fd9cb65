"""The schema-registry wire format: ``00`` + 4-byte big-endian schema id + Avro binary body.

Used instead of the single-object encoding when ``WATTSUP_KAFKA_SCHEMA_REGISTRY_URL`` is set
(:func:`schemas.serde.make_serde`), so WattsUp topics can be read by any Confluent-compatible
consumer (Java ``KafkaAvroDeserializer``, Kafka Connect, ksqlDB) and schemas are governed by the
registry's compatibility rules. Works with Confluent Schema Registry and with Apicurio Registry's
compatibility API (use ``http://host:port/apis/ccompat/v7`` as the URL).

Subjects follow the *record name strategy*: the subject is the record's full name
(``io.wattsup.readings.MeterReading``), not ``<topic>-value``, because the readings topic carries
both ``MeterReading`` and ``MeterReadingBatch``; a topic-name subject would make the two fight
over one compatibility history.

This is a thin layer over ``SchemaRegistryClient`` and the same fastavro encode/decode the
single-object path uses (:func:`schemas.serde.schemaless_encode` / ``schemaless_decode``) rather
than confluent's ``AvroSerializer``: it keeps one code path for both wire formats, the
``raw_timestamps`` fast path, and the "which record type is this?" answer a shared topic needs.

Errors are split on purpose. A message that cannot be decoded (wrong magic byte, a schema id the
registry does not have, a corrupt body) is a :class:`~schemas.serde.SerdeError`, which callers
dead-letter. A registry that cannot be reached is a :class:`RegistryUnavailableError`, which
they must *not* dead-letter: the message is fine, the lookup should be retried.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas.serde import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    SchemaCatalog,
    SchemaVersion,
    SerdeError,
    SingleObjectSerde,
    default_catalog,
    parse_schema_version,
    schemaless_decode,
    schemaless_encode,
)

log = logging.getLogger(__name__)

HEADER_SIZE = 5
"""Magic byte plus the 4-byte schema id."""

_NOT_FOUND_CODES = {40401, 40402, 40403}  # subject, version, schema not found


class RegistryUnavailableError(RuntimeError):
    """The schema registry could not be asked (down, unreachable, 5xx); retry, don't dead-letter."""


def subject_for(record_name: str) -> str:
    """Record name strategy: the subject of a record type is its full name."""
    return record_name


class RegistrySerde:
    """Avro in the Confluent wire format, schema ids from a Confluent-compatible registry.

    ``encode`` registers the catalog's current schema under its record-name subject on first
    use (or, with ``auto_register=False``, only looks its id up, for deployments where producers
    may not register) and caches the id. ``decode`` fetches the writer schema by id once, caches
    it, and resolves it to the catalog's current reader schema of the same name, so data written
    with an older or newer compatible version decodes to today's shape.

    ``conf`` is passed to ``SchemaRegistryClient`` (e.g. ``{"basic.auth.user.info": "u:p"}`` from
    ``KafkaConnection.registry_config()``). The caches are plain dicts: a lost race only repeats
    an idempotent lookup, so no lock is needed.
    """

    wire_format = "confluent"

    def __init__(
        self,
        url: str,
        *,
        catalog: SchemaCatalog | None = None,
        auto_register: bool = True,
        accept_single_object: bool = True,
        client: SchemaRegistryClient | None = None,
        **conf: Any,
    ) -> None:
        self.url = url.rstrip("/")
        self.catalog = catalog or default_catalog()
        self.auto_register = auto_register
        self.client = client or SchemaRegistryClient({"url": self.url, **conf})
        # Topics written before a registry was configured hold single-object messages; they
        # name their writer schema by fingerprint, so they stay readable without guessing.
        self._single_object = SingleObjectSerde(self.catalog) if accept_single_object else None
        self._ids: dict[str, tuple[int, SchemaVersion]] = {}
        self._writers: dict[int, SchemaVersion] = {}

    # -- encoding ------------------------------------------------------------------------
    def schema_id(self, name: str) -> int:
        """Registry id of the current schema of record type ``name`` (registered if allowed)."""
        cached = self._ids.get(name)
        if cached is not None:
            return cached[0]
        schema = self.catalog.reader(name)
        subject = subject_for(name)
        # Always the same text for the same schema: registries compare registrations textually
        # (Apicurio registers the canonical form and the full JSON as two versions).
        registry_schema = Schema(json.dumps(schema.raw), "AVRO")
        try:
            if self.auto_register:
                schema_id = self.client.register_schema(subject, registry_schema)
            else:
                schema_id = self.client.lookup_schema(subject, registry_schema).schema_id
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise SerdeError(
                    f"the registry at {self.url} rejects the current {name} schema as incompatible with "
                    f"subject {subject!r}: {exc.error_message}"
                ) from exc
            if exc.error_code in _NOT_FOUND_CODES:
                raise SerdeError(
                    f"the current {name} schema is not registered under subject {subject!r} at {self.url} "
                    "and auto-registration is off: register it first"
                ) from exc
            raise self._unavailable(f"registering {name}", exc) from exc
        except Exception as exc:  # noqa: BLE001 - connection errors come from the HTTP client
            raise self._unavailable(f"registering {name}", exc) from exc
        log.info("schema %s has id %d in the registry at %s", name, schema_id, self.url)
        self._ids[name] = (schema_id, schema)
        self._writers.setdefault(schema_id, schema)
        return schema_id

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        cached = self._ids.get(name)
        if cached is None:
            self.schema_id(name)
            cached = self._ids[name]
        schema_id, schema = cached
        return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big") + schemaless_encode(schema, record)

    # -- decoding ------------------------------------------------------------------------
    def decode(self, data: bytes, *, raw_timestamps: bool = False) -> tuple[str, dict[str, Any]]:
        """Return ``(full record name, record)``; :class:`SerdeError` for any undecodable message."""
        if data is None or len(data) < HEADER_SIZE:
            raise SerdeError(f"message too short for the schema-registry wire format ({len(data or b'')} bytes)")
        if data[:1] != CONFLUENT_MAGIC:
            if self._single_object is not None and data[:2] == SINGLE_OBJECT_MAGIC:
                return self._single_object.decode(data, raw_timestamps=raw_timestamps)
            raise SerdeError(
                f"not in the schema-registry wire format: magic byte {data[0]:#04x} is not 0x00"
            )
        writer = self.writer_schema(int.from_bytes(data[1:HEADER_SIZE], "big"))
        reader = self.catalog.current.get(writer.name, writer)
        record = schemaless_decode(data[HEADER_SIZE:], writer, reader, raw_timestamps=raw_timestamps)
        return writer.name, record

    def writer_schema(self, schema_id: int) -> SchemaVersion:
        """The schema registered under ``schema_id`` (fetched once, then cached)."""
        cached = self._writers.get(schema_id)
        if cached is not None:
            return cached
        try:
            registered = self.client.get_schema(schema_id)
            if registered.schema_type not in (None, "AVRO"):
                raise SerdeError(f"schema id {schema_id} is a {registered.schema_type} schema, not Avro")
            named = self._referenced_types(registered, seen=set())
        except SchemaRegistryError as exc:
            if exc.error_code in _NOT_FOUND_CODES or exc.http_status_code == 404:
                raise SerdeError(f"unknown schema id {schema_id}: the registry at {self.url} does not have it") from exc
            raise self._unavailable(f"fetching schema id {schema_id}", exc) from exc
        except SerdeError:
            raise
        except Exception as exc:  # noqa: BLE001 - connection errors come from the HTTP client
            raise self._unavailable(f"fetching schema id {schema_id}", exc) from exc
        version = parse_schema_version(registered.schema_str, named)
        # Share the catalog's parsed schema objects when the registry holds one of our versions.
        version = self.catalog.by_fingerprint.get(version.fingerprint, version)
        self._writers[schema_id] = version
        log.debug("schema id %d is %s (fingerprint %s)", schema_id, version.name, version.fingerprint.hex())
        return version

    def _referenced_types(self, schema: Schema, seen: set[tuple[str, int]]) -> dict[str, Any]:
        """Named types of a schema's references (schemas registered by other tools may use them)."""
        named: dict[str, Any] = {}
        for ref in schema.references or []:
            key = (ref.subject, ref.version)
            if key in seen:
                continue
            seen.add(key)
            referenced = self.client.get_version(ref.subject, ref.version).schema
            named.update(self._referenced_types(referenced, seen))
            try:  # fills ``named`` with every type the referenced schema defines, nested ones too
                fastavro.parse_schema(json.loads(referenced.schema_str), named_schemas=named)
            except Exception as exc:  # noqa: BLE001 - fastavro raises several types for bad schemas
                raise SerdeError(f"cannot parse schema {ref.subject!r} v{ref.version} referenced as {ref.name!r}: {exc}") from exc
        return named

    def _unavailable(self, doing: str, exc: Exception) -> RegistryUnavailableError:
        return RegistryUnavailableError(f"schema registry at {self.url} failed while {doing}: {exc}")
