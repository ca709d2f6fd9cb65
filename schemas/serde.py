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

Evolving a schema (the files in ``schemas/avro`` today are version 1): first copy the current
``.avsc`` files that change *and every file that embeds them* (``meter_reading_batch.avsc``
embeds ``MeterReading``) into ``schemas/avro/versions/<n>/``, then edit the current file, adding
fields only with a default so old data resolves. Readers keep decoding version-``n`` messages by
their fingerprint; see ``schemas/avro/versions/README.md``.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import fastavro
import fastavro.validation
from fastavro.schema import UnknownType, expand_schema, fingerprint, to_parsing_canonical_form

log = logging.getLogger(__name__)

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
INCIDENT = "io.wattsup.incidents.Incident"
FEEDBACK_MARK = "io.wattsup.feedback.FeedbackMark"

# Dependencies first: a schema may refer to a named type defined in an earlier file.
_LOAD_ORDER = ("meter_reading", "meter_reading_batch", "forecast", "anomaly", "dead_letter", "incident", "feedback_mark")


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


def _without_fastavro_markers(schema: Any) -> Any:
    """Drop fastavro's private ``__fastavro_parsed`` / ``__named_schemas`` keys from a schema.

    ``expand_schema`` keeps them, and ``__named_schemas`` holds every type parsed so far; left in,
    they would be sent to a schema registry as schema properties and make fastavro skip parsing.
    """
    if isinstance(schema, dict):
        return {k: _without_fastavro_markers(v) for k, v in schema.items() if not k.startswith("__")}
    if isinstance(schema, list):
        return [_without_fastavro_markers(s) for s in schema]
    return schema


def _expanded(parsed: Any) -> Any:
    """Self-contained JSON schema: named references inlined, fastavro's markers removed."""
    return _without_fastavro_markers(expand_schema(parsed))


@dataclass(frozen=True)
class SchemaVersion:
    """One parsed schema: its full name, fingerprint and the variants fastavro needs."""

    name: str
    raw: dict[str, Any]
    """Fully expanded JSON schema (named references inlined)."""

    @cached_property
    def parsed(self) -> dict[str, Any]:
        # Parsed with fastavro's "already parsed" marker: without it schemaless_writer/reader
        # parse the schema again on every message, which doubles encode and decode time.
        return fastavro.parse_schema(copy.deepcopy(self.raw))

    @cached_property
    def parsed_raw_time(self) -> dict[str, Any]:
        return fastavro.parse_schema(_strip_logical_types(self.raw))

    @cached_property
    def canonical_form(self) -> str:
        return to_parsing_canonical_form(self.raw)

    @cached_property
    def fingerprint(self) -> bytes:
        """CRC-64-AVRO fingerprint as the 8 little-endian bytes the single-object encoding carries.

        fastavro already returns the hex of the little-endian bytes (Java's byte order), so the
        bytes are taken as they are; reading that hex as a number and packing it again would
        reverse them and no other Avro implementation would recognise the header.
        """
        return bytes.fromhex(fingerprint(self.canonical_form, "CRC-64-AVRO"))

    @property
    def fingerprint64(self) -> int:
        """The fingerprint as Java's ``SchemaNormalization.parsingFingerprint64`` (signed long) gives it."""
        return int.from_bytes(self.fingerprint, "little", signed=True)


def parse_schema_version(schema: str | dict[str, Any], named_schemas: dict[str, Any] | None = None) -> SchemaVersion:
    """A :class:`SchemaVersion` from JSON text or a dict, e.g. a writer schema a registry returned.

    ``named_schemas`` supplies named types the schema refers to but does not define (schema
    references); the result is self-contained either way.
    """
    try:
        doc = json.loads(schema) if isinstance(schema, str) else copy.deepcopy(schema)
        parsed = fastavro.parse_schema(doc, named_schemas=dict(named_schemas or {}))
    except Exception as exc:  # noqa: BLE001 - fastavro raises several types for bad schemas
        raise SerdeError(f"cannot parse Avro schema: {type(exc).__name__}: {exc}") from exc
    raw = _expanded(parsed)
    if not isinstance(raw, dict) or "name" not in raw:
        raise SerdeError(f"expected a named Avro record schema, got {str(schema)[:120]}")
    return SchemaVersion(name=raw["name"], raw=raw)


def _load_dir(
    directory: Path,
    names: Iterable[str] | None = None,
    fallback_named: dict[str, Any] | None = None,
) -> tuple[list[SchemaVersion], dict[str, Any]]:
    """Parse the ``.avsc`` files of one directory; returns the versions and the named types they define.

    Files may refer to named types defined in other files of the same directory, in any file
    order (a file is retried once the types it needs are known). A superseded-version directory
    may hold only some files: names it does not define are taken from ``fallback_named`` (the
    current schemas), so ``versions/1/`` can keep just the changed files plus those embedding them.
    """
    paths = [directory / f"{n}.avsc" for n in names] if names else sorted(directory.glob("*.avsc"))
    named: dict[str, Any] = {}
    versions: list[SchemaVersion] = []
    pending = list(paths)
    borrowed = False
    while pending:
        deferred: list[tuple[Path, Exception]] = []
        for path in pending:
            trial = dict(named)  # fastavro fills named_schemas even when parsing fails half-way
            try:
                parsed = fastavro.parse_schema(json.loads(path.read_text()), named_schemas=trial)
            except UnknownType as exc:
                deferred.append((path, exc))
                continue
            except Exception as exc:  # noqa: BLE001 - re-raised with the file name
                raise SerdeError(f"cannot parse Avro schema {path}: {exc}") from exc
            named = trial
            raw = _expanded(parsed)
            versions.append(SchemaVersion(name=raw["name"], raw=raw))
        if len(deferred) == len(pending):  # no file could be parsed in this round
            if fallback_named and not borrowed:
                named = {**fallback_named, **named}
                borrowed = True
            else:
                path, exc = deferred[0]
                raise SerdeError(f"cannot parse Avro schema {path}: unknown named type {exc}")
        pending = [path for path, _ in deferred]
    return versions, named


def _version_order(path: Path) -> tuple[int, int | str]:
    """Sort ``versions/2`` before ``versions/10``."""
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


class SchemaCatalog:
    """All WattsUp schemas: the current reader schema per name and every known writer schema."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        current, current_named = _load_dir(schema_dir, _LOAD_ORDER if schema_dir == SCHEMA_DIR else None)
        self.current: dict[str, SchemaVersion] = {v.name: v for v in current}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {v.fingerprint: v for v in current}
        versions_dir = schema_dir / "versions"
        if versions_dir.is_dir():
            for sub in sorted((p for p in versions_dir.iterdir() if p.is_dir()), key=_version_order):
                for v in _load_dir(sub, fallback_named=current_named)[0]:
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
    """Read one record written with ``writer``, resolved to ``reader`` (schema evolution).

    Given ``bytes``, the body must be exactly one record: leftover bytes mean the message was
    not written with ``writer`` (or is corrupt), and decoding it would yield plausible garbage.
    Given a stream, reading stops after one record so several can be read in turn.
    """
    whole_message = not isinstance(body, io.BytesIO)
    stream = io.BytesIO(body) if whole_message else body
    w = writer.parsed_raw_time if raw_timestamps else writer.parsed
    r = None
    if reader is not None and reader.fingerprint != writer.fingerprint:
        r = reader.parsed_raw_time if raw_timestamps else reader.parsed
    try:
        record = fastavro.schemaless_reader(stream, w, r)
    except EOFError as exc:
        size = f" ({len(body)} body bytes)" if whole_message else ""  # type: ignore[arg-type]
        raise SerdeError(f"cannot decode {writer.name} body: truncated message{size}") from exc
    except Exception as exc:  # noqa: BLE001 - fastavro raises many types on corrupt input
        raise SerdeError(f"cannot decode {writer.name} body: {type(exc).__name__}: {exc}") from exc
    if whole_message and stream.tell() != len(body):  # type: ignore[arg-type]
        extra = len(body) - stream.tell()  # type: ignore[arg-type]
        raise SerdeError(
            f"cannot decode {writer.name} body: {extra} unexpected bytes after the record "
            "(written with another schema, or corrupt)"
        )
    return record


class SingleObjectSerde:
    """Avro single-object encoding with writer schemas resolved from the local catalog."""

    wire_format = "single-object"

    def __init__(self, catalog: SchemaCatalog | None = None) -> None:
        self.catalog = catalog or default_catalog()
        self._warned_legacy = False

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        schema = self.catalog.reader(name)
        return SINGLE_OBJECT_MAGIC + schema.fingerprint + schemaless_encode(schema, record)

    def _legacy_writer(self, fp: bytes) -> SchemaVersion | None:
        """Writer schema of a message from a build that wrote the fingerprint byte-reversed.

        Builds before the byte-order fix wrote the fingerprint big-endian; such records may still
        sit in a local broker's log, so they stay readable (a 64-bit fingerprint cannot be
        mistaken for another schema's).
        """
        writer = self.catalog.by_fingerprint.get(fp[::-1])
        if writer is not None and not self._warned_legacy:
            self._warned_legacy = True
            log.warning("decoding %s records whose fingerprint is byte-reversed (written before the "
                        "single-object byte-order fix); re-encode them when convenient", writer.name)
        return writer

    def decode(self, data: bytes, *, raw_timestamps: bool = False) -> tuple[str, dict[str, Any]]:
        """Return ``(full record name, record)``; raises :class:`SerdeError` on any bad input."""
        if data is None or len(data) < 10:
            raise SerdeError(f"message too short for Avro single-object encoding ({len(data or b'')} bytes)")
        if data[:2] != SINGLE_OBJECT_MAGIC:
            hint = " (it looks like the schema-registry wire format)" if data[:1] == CONFLUENT_MAGIC else ""
            raise SerdeError(f"not Avro single-object encoded: header {bytes(data[:2]).hex()} is not c301{hint}")
        fp = bytes(data[2:10])
        writer = self.catalog.by_fingerprint.get(fp) or self._legacy_writer(fp)
        if writer is None:
            raise SerdeError(
                f"unknown writer schema fingerprint {int.from_bytes(fp, 'little'):#018x}: none of the "
                f"{len(self.catalog.by_fingerprint)} schemas under schemas/avro (current or versions/) has it; "
                "a newer producer's schema must be shipped under schemas/avro/versions/"
            )
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
