"""The one Avro serialisation module every WattsUp service uses.

Two wire formats:

* **Avro single-object encoding** (the default, no extra service needed): ``C3 01`` + the
  8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form
  + the Avro binary body. The reader finds the writer schema among the ``.avsc`` files shipped
  in ``schemas/avro`` (current and past versions) by that fingerprint, and resolves it to the
  current reader schema of the same name, so old data stays readable after a schema evolves.
* **Confluent Schema Registry wire format** (``00`` + 4-byte big-endian schema id + body), used
  when a registry URL is configured; see :mod:`schemas.registry`.

Decoding can keep ``timestamp-millis`` fields as plain ``int`` milliseconds: fastavro would
otherwise build a ``datetime`` per timestamp, which dominates decode time on the hot path.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import fastavro
import fastavro.validation
from fastavro.schema import expand_schema, fingerprint, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parent / "avro"
"""Current schemas; ``SCHEMA_DIR / "versions"`` keeps superseded writer schemas."""

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"

# Full names of the records every service exchanges.
METER_READING = "io.wattsup.readings.MeterReading"
METER_READING_BATCH = "io.wattsup.readings.MeterReadingBatch"
FORECAST = "io.wattsup.forecasts.Forecast"
ANOMALY = "io.wattsup.anomalies.Anomaly"
DEAD_LETTER = "io.wattsup.deadletters.DeadLetter"

# Dependencies first: a schema may refer to a named type defined in an earlier file.
_LOAD_ORDER = ("meter_reading", "meter_reading_batch", "forecast", "anomaly", "dead_letter")


class SerdeError(ValueError):
    """A message could not be encoded or decoded; the text says what is wrong with it."""


def _strip_logical_types(schema: Any) -> Any:
    """Return a copy of an expanded schema without ``logicalType`` annotations.

    The binary encoding is identical; only fastavro's conversion to ``datetime`` is skipped.
    """
    if isinstance(schema, dict):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    return schema


@dataclass(frozen=True)
class SchemaVersion:
    """One parsed schema: its full name, fingerprint and the variants fastavro needs."""

    name: str
    raw: dict[str, Any]
    """Fully expanded JSON schema (named references inlined)."""

    @cached_property
    def parsed(self) -> dict[str, Any]:
        return fastavro.parse_schema(copy.deepcopy(self.raw), _write_hint=False)

    @cached_property
    def parsed_raw_time(self) -> dict[str, Any]:
        return fastavro.parse_schema(_strip_logical_types(self.raw), _write_hint=False)

    @cached_property
    def canonical_form(self) -> str:
        return to_parsing_canonical_form(self.raw)

    @cached_property
    def fingerprint(self) -> bytes:
        """CRC-64-AVRO fingerprint, little-endian, as the single-object encoding carries it."""
        value = int(fingerprint(self.canonical_form, "CRC-64-AVRO"), 16)
        return struct.pack("<Q", value)


def _load_dir(directory: Path, names: Iterable[str] | None = None) -> list[SchemaVersion]:
    named: dict[str, Any] = {}
    paths = [directory / f"{n}.avsc" for n in names] if names else sorted(directory.glob("*.avsc"))
    versions = []
    for path in paths:
        try:
            parsed = fastavro.parse_schema(json.loads(path.read_text()), named_schemas=named)
        except Exception as exc:  # noqa: BLE001 - re-raised with the file name
            raise SerdeError(f"cannot parse Avro schema {path}: {exc}") from exc
        raw = expand_schema(parsed)
        versions.append(SchemaVersion(name=raw["name"], raw=raw))
    return versions


class SchemaCatalog:
    """All WattsUp schemas: the current reader schema per name and every known writer schema."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        current = _load_dir(schema_dir, _LOAD_ORDER if schema_dir == SCHEMA_DIR else None)
        self.current: dict[str, SchemaVersion] = {v.name: v for v in current}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {v.fingerprint: v for v in current}
        versions_dir = schema_dir / "versions"
        if versions_dir.is_dir():
            for sub in sorted(p for p in versions_dir.iterdir() if p.is_dir()):
                for v in _load_dir(sub):
                    self.by_fingerprint.setdefault(v.fingerprint, v)

    def add(self, version: SchemaVersion, *, as_current: bool = False) -> None:
        """Register an extra writer schema (and optionally make it the reader schema)."""
        self.by_fingerprint[version.fingerprint] = version
        if as_current:
            self.current[version.name] = version

    def reader(self, name: str) -> SchemaVersion:
        try:
            return self.current[name]
        except KeyError:
            raise SerdeError(f"unknown record type {name!r}; known: {sorted(self.current)}") from None


_DEFAULT_CATALOG: SchemaCatalog | None = None


def default_catalog() -> SchemaCatalog:
    global _DEFAULT_CATALOG
    if _DEFAULT_CATALOG is None:
        _DEFAULT_CATALOG = SchemaCatalog()
    return _DEFAULT_CATALOG


def schemaless_encode(schema: SchemaVersion, record: dict[str, Any]) -> bytes:
    """Avro binary body of ``record``; raises :class:`SerdeError` naming the bad field."""
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, schema.parsed, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SerdeError(f"record does not match {schema.name}: {_invalid_fields(schema, record) or exc}") from exc
    return buf.getvalue()


def _invalid_fields(schema: SchemaVersion, record: dict[str, Any]) -> str:
    """Which fields of ``record`` break the schema, e.g. ``energy_kwh is 'lots', expected double``."""
    problems = []
    for field in schema.raw.get("fields", []):
        name = field["name"]
        if name not in record and "default" not in field:
            problems.append(f"{name} is missing")
        elif name in record and not fastavro.validation.validate(
            record[name], fastavro.parse_schema({"type": "record", "name": "_F", "fields": [field]},
                                                _write_hint=False)["fields"][0]["type"], raise_errors=False
        ):
            problems.append(f"{name} is {record[name]!r}, expected {json.dumps(field['type'])[:80]}")
    return "; ".join(problems)


def schemaless_decode(
    body: bytes | io.BytesIO,
    writer: SchemaVersion,
    reader: SchemaVersion | None = None,
    *,
    raw_timestamps: bool = False,
) -> dict[str, Any]:
    stream = body if isinstance(body, io.BytesIO) else io.BytesIO(body)
    w = writer.parsed_raw_time if raw_timestamps else writer.parsed
    r = None
    if reader is not None and reader.fingerprint != writer.fingerprint:
        r = reader.parsed_raw_time if raw_timestamps else reader.parsed
    try:
        return fastavro.schemaless_reader(stream, w, r)
    except Exception as exc:  # noqa: BLE001 - fastavro raises many types on corrupt input
        raise SerdeError(f"cannot decode {writer.name} body: {type(exc).__name__}: {exc}") from exc


class SingleObjectSerde:
    """Avro single-object encoding with writer schemas resolved from the local catalog."""

    wire_format = "single-object"

    def __init__(self, catalog: SchemaCatalog | None = None) -> None:
        self.catalog = catalog or default_catalog()

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        schema = self.catalog.reader(name)
        return SINGLE_OBJECT_MAGIC + schema.fingerprint + schemaless_encode(schema, record)

    def decode(self, data: bytes, *, raw_timestamps: bool = False) -> tuple[str, dict[str, Any]]:
        """Return ``(full record name, record)``; raises :class:`SerdeError` on any bad input."""
        if data is None or len(data) < 10:
            raise SerdeError(f"message too short for Avro single-object encoding ({len(data or b'')} bytes)")
        if data[:2] != SINGLE_OBJECT_MAGIC:
            raise SerdeError(f"not Avro single-object encoded: header {data[:2].hex()} is not c301")
        writer = self.catalog.by_fingerprint.get(data[2:10])
        if writer is None:
            raise SerdeError(f"unknown writer schema fingerprint {data[2:10][::-1].hex()}")
        reader = self.catalog.current.get(writer.name, writer)
        record = schemaless_decode(data[10:], writer, reader, raw_timestamps=raw_timestamps)
        return writer.name, record


Serde = SingleObjectSerde
"""The interface both wire formats implement: ``encode(name, record)`` and ``decode(data)``."""


def make_serde(schema_registry_url: str | None = None, **registry_conf: Any) -> Any:
    """The serde for this deployment: the registry wire format if a URL is set, else single-object."""
    if schema_registry_url:
        from schemas.registry import RegistrySerde

        return RegistrySerde(schema_registry_url, **registry_conf)
    return SingleObjectSerde()
