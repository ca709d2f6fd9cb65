"""Turn a frame of readings into Kafka messages: keys, Avro values and head-end batches.

Why a module of its own: encoding is the producer's bottleneck. Building one dict per reading
and handing it to fastavro costs a Python call chain per reading; here each *column* is encoded
once with numpy (strings through a table of their distinct values, numbers as zigzag varints or
little-endian doubles) and every row's bytes are gathered with one boolean mask, and a head-end
batch is a slice of that buffer with a small prefix.

The bytes are exactly what fastavro writes for the same record (the tests compare them). The
fields are encoded in the order and with the types of the serde's current ``MeterReading`` and
``MeterReadingBatch`` schemas (``schemas/avro/*.avsc``), so a schema that evolves (a new optional
field, say) is followed without a change here; a field of a type this encoder does not know
sends frames through the generic dict-plus-serde path (with a warning) rather than being
written wrongly.

Keys: every readings-topic record, single reading or batch, is keyed by its **feeder id** (see
:mod:`schemas.partitioning`), so a meter always lands in its feeder's partition.

Head-end batches group a frame (in delivery order) by *delivery slot* and feeder. The slot of a
row is the newest interval seen up to it: a late reading sits behind newer readings and goes out
in the same upload as them, so a fleet gives one record per feeder per interval however many
readings are late, and a batch never reorders a meter's readings.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from foundation.timeutil import epoch_ms
from schemas.serde import (
    CONFLUENT_MAGIC,
    METER_READING,
    METER_READING_BATCH,
    SINGLE_OBJECT_MAGIC,
    SerdeError,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_READINGS_PER_BATCH = 5000
"""A head-end batch holds at most this many readings (~250 kB), well under Kafka's 1 MB default."""

_ENCODE_CHUNK_ROWS = 100_000
"""Rows encoded per numpy pass: bounds the temporary byte matrix to a few MB."""

_INT32 = (-(2**31), 2**31 - 1)

# -- frame columns ---------------------------------------------------------------------------

def delivery_slots(timestamps_ms: np.ndarray) -> np.ndarray:
    """Delivery slot of each row of a frame in delivery order: the newest interval end so far."""
    return np.maximum.accumulate(timestamps_ms) if len(timestamps_ms) else timestamps_ms


def split_flags(text: str) -> list[str]:
    """``"LATE;ESTIMATED"`` -> ``["LATE", "ESTIMATED"]``; empty parts are dropped."""
    return [flag for flag in text.split(";") if flag] if text else []


def _optional_floats(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    return frame[column].to_numpy(dtype=float, na_value=np.nan) if column in frame else None


def reading_records(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """``MeterReading`` dicts from a frame with timestamp, meter_id, feeder_id, kwh, interval_seconds
    (optional quality_flags, voltage_v, power_kw; NaN there means "not reported").

    The generic path (used when the vectorised encoder is off, and for callers that want dicts).
    Columns become Python lists first: indexing numpy scalars row by row is several times slower.
    """
    n = len(frame)
    ts = epoch_ms(frame["timestamp"]).tolist()
    meters = frame["meter_id"].tolist()
    feeders = frame["feeder_id"].tolist()
    kwh = frame["kwh"].to_numpy(dtype=float).tolist()
    interval = frame["interval_seconds"].to_numpy(dtype=np.int64).tolist()
    flags = frame["quality_flags"].fillna("").tolist() if "quality_flags" in frame else [""] * n
    optional = {}
    for column in ("voltage_v", "power_kw"):
        values = _optional_floats(frame, column)
        optional[column] = [None] * n if values is None else [None if math.isnan(v) else v for v in values.tolist()]
    for i in range(n):
        yield {
            "meter_id": meters[i],
            "feeder_id": feeders[i],
            "timestamp": ts[i],
            "energy_kwh": kwh[i],
            "interval_seconds": interval[i],
            "voltage_v": optional["voltage_v"][i],
            "power_kw": optional["power_kw"][i],
            "quality_flags": split_flags(flags[i]),
        }


# -- Avro primitives -------------------------------------------------------------------------

def avro_long(value: int) -> bytes:
    """Avro ``long``/``int``: zigzag, then base-128 varint, low group first."""
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def avro_string(value: str) -> bytes:
    data = value.encode("utf-8")
    return avro_long(len(data)) + data


def _varint_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Avro ``long`` encoding of int64 values: an (n, width) byte matrix and each row's length."""
    v = np.ascontiguousarray(values, dtype=np.int64)
    rest = ((v << 1) ^ (v >> 63)).view(np.uint64)
    n = len(v)
    columns: list[np.ndarray] = []
    lengths = np.ones(n, dtype=np.int64)
    seven = np.uint64(7)
    for _ in range(10):  # a 64-bit value needs at most 10 groups of 7 bits
        group = (rest & np.uint64(0x7F)).astype(np.uint8)
        rest = rest >> seven
        more = rest != 0
        columns.append(group | (more.astype(np.uint8) << 7))
        if not more.any():
            break
        lengths += more
    return np.stack(columns, axis=1), lengths


def _table_matrix(codes: np.ndarray, table: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row bytes picked from a small table of encoded distinct values."""
    widths = np.array([len(b) for b in table], dtype=np.int64)
    padded = np.zeros((len(table), int(widths.max())), dtype=np.uint8)
    for i, b in enumerate(table):
        padded[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    return padded[codes], widths[codes]


def _nullable_double_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Avro ``["null", "double"]``: ``00`` for NaN, else ``02`` and the little-endian double."""
    present = ~np.isnan(values)
    matrix = np.zeros((len(values), 9), dtype=np.uint8)
    matrix[:, 0] = np.where(present, 2, 0)
    matrix[:, 1:] = np.ascontiguousarray(values, dtype="<f8").view(np.uint8).reshape(-1, 8)
    return matrix, np.where(present, 9, 1)


def _factorize(values: pd.Series, field: str) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(values)
    if len(codes) and codes.min() < 0:
        raise SerdeError(f"record does not match {METER_READING}: {field} is missing in some rows")
    return codes, np.asarray(uniques, dtype=object)


def _assemble(segments: list[bytes | tuple[np.ndarray, np.ndarray]], n: int) -> tuple[bytes, np.ndarray]:
    """Concatenate per-row segments in order: the bytes of all rows and each row's start offset.

    A segment is constant ``bytes`` or an (n, width) matrix with per-row lengths. The matrices
    sit side by side in one (n, total width) array; selecting it with a "byte is used" mask reads
    row by row, so the result is every row's fields in order, rows one after another.
    """
    width = sum(len(s) if isinstance(s, bytes) else s[0].shape[1] for s in segments)
    matrix = np.empty((n, width), dtype=np.uint8)
    used = np.empty((n, width), dtype=bool)
    row_lengths = np.zeros(n, dtype=np.int64)
    col = 0
    for segment in segments:
        if isinstance(segment, bytes):
            w = len(segment)
            matrix[:, col:col + w] = np.frombuffer(segment, dtype=np.uint8)
            used[:, col:col + w] = True
            row_lengths += w
        else:
            values, lengths = segment
            w = values.shape[1]
            matrix[:, col:col + w] = values
            used[:, col:col + w] = np.arange(w) < lengths[:, None]
            row_lengths += lengths
        col += w
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_lengths, out=offsets[1:])
    return matrix[used].tobytes(), offsets


# -- the schemas' fields ----------------------------------------------------------------------

FRAME_COLUMNS = {"energy_kwh": "kwh"}
"""Frame columns named otherwise than their record field; every other field reads its own name."""

_STRING, _TIMESTAMP, _LONG, _INT, _DOUBLE, _OPTIONAL_DOUBLE, _OPTIONAL_STRING, _STRING_LIST, _READINGS = (
    "string", "timestamp", "long", "int", "double", "optional double", "optional string", "string list", "readings")


def _field_kind(field_type: Any) -> str | None:
    """The encoding of an Avro field type this module can write column-wise, or None."""
    if field_type in ("string", "long", "int", "double"):
        return {"string": _STRING, "long": _LONG, "int": _INT, "double": _DOUBLE}[field_type]
    if isinstance(field_type, dict):
        if field_type.get("type") == "long" and field_type.get("logicalType") == "timestamp-millis":
            return _TIMESTAMP
        if field_type.get("type") == "array":
            items = field_type["items"]
            if items == "string":
                return _STRING_LIST
            if isinstance(items, dict) and items.get("name") == METER_READING:
                return _READINGS
    if field_type == ["null", "double"]:
        return _OPTIONAL_DOUBLE
    if field_type == ["null", "string"]:
        return _OPTIONAL_STRING
    return None


def field_plan(schema: dict[str, Any]) -> list[tuple[str, str]] | None:
    """(field name, kind) of a record schema's fields in order; None if a type is not supported."""
    plan = []
    for f in schema["fields"]:
        kind = _field_kind(f["type"])
        if kind is None:
            return None
        plan.append((f["name"], kind))
    return plan


def _column_segment(frame: pd.DataFrame, field: str, kind: str) -> bytes | tuple[np.ndarray, np.ndarray]:
    """One field of every row: constant bytes, or a byte matrix and each row's length."""
    column = FRAME_COLUMNS.get(field, field)
    n = len(frame)
    if column not in frame:
        if kind == _OPTIONAL_DOUBLE or kind == _OPTIONAL_STRING:
            return b"\x00"  # null
        if kind == _STRING_LIST:
            return b"\x00"  # empty array
        raise SerdeError(f"record does not match {METER_READING}: no {column} column for field {field}")
    if kind == _STRING:
        codes, uniques = _factorize(frame[column], field)
        return _table_matrix(codes, [avro_string(str(v)) for v in uniques])
    if kind == _TIMESTAMP:
        return _varint_matrix(epoch_ms(frame[column]))
    if kind in (_LONG, _INT):
        values = frame[column].to_numpy(dtype=np.int64)
        if kind == _INT and n and (values.min() < _INT32[0] or values.max() > _INT32[1]):
            raise SerdeError(f"record does not match {METER_READING}: {field} out of the int range")
        return _varint_matrix(values)
    if kind == _DOUBLE:
        return (np.ascontiguousarray(frame[column].to_numpy(dtype=float), dtype="<f8").view(np.uint8).reshape(n, 8),
                np.full(n, 8, dtype=np.int64))
    if kind == _OPTIONAL_DOUBLE:
        values = _optional_floats(frame, column)
        return b"\x00" if values is None or np.isnan(values).all() else _nullable_double_matrix(values)
    if kind == _STRING_LIST:
        codes, texts = pd.factorize(frame[column].fillna(""))
        table = []
        for text in texts:
            flags = split_flags(str(text))
            table.append(avro_long(len(flags)) + b"".join(avro_string(f) for f in flags) + b"\x00" if flags else b"\x00")
        return _table_matrix(codes, table)
    raise SerdeError(f"{field}: a {kind} field cannot be encoded per row")


def encode_reading_bodies(frame: pd.DataFrame, plan: list[tuple[str, str]],
                          prefix: bytes = b"") -> tuple[bytes, np.ndarray]:
    """Avro bodies of ``MeterReading`` (fields as in ``plan``) for every row, each preceded by ``prefix``.

    Returns all bytes and n+1 offsets: row i is ``blob[offsets[i]:offsets[i + 1]]``.
    """
    segments: list[bytes | tuple[np.ndarray, np.ndarray]] = [prefix] if prefix else []
    segments += [_column_segment(frame, field, kind) for field, kind in plan]
    return _assemble(segments, len(frame))


def _encode_value(kind: str, value: Any) -> bytes:
    """One value of a batch's own fields (not its readings)."""
    if kind == _STRING:
        return avro_string(value)
    if kind in (_TIMESTAMP, _LONG, _INT):
        return avro_long(int(value))
    if kind == _OPTIONAL_STRING:
        return b"\x00" if value is None else b"\x02" + avro_string(value)
    if kind == _OPTIONAL_DOUBLE:
        return b"\x00" if value is None else b"\x02" + np.float64(value).astype("<f8").tobytes()
    if kind == _DOUBLE:
        return np.float64(value).astype("<f8").tobytes()
    raise SerdeError(f"a batch field of kind {kind} cannot be encoded")


# -- head-end batches ------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchPlan:
    """How a frame splits into head-end batches: a row order and the batches' ranges in it."""

    order: np.ndarray
    """Row positions of the frame, batch after batch."""
    bounds: list[tuple[int, int]]
    """(start, end) of each batch in ``order``."""
    feeders: list[str]
    batch_ids: list[str]


def plan_batches(frame: pd.DataFrame, max_readings: int = DEFAULT_MAX_READINGS_PER_BATCH) -> BatchPlan:
    """One batch per feeder and delivery slot (split past ``max_readings``), in delivery order."""
    n = len(frame)
    if n == 0:
        return BatchPlan(np.zeros(0, dtype=np.int64), [], [], [])
    slots = delivery_slots(epoch_ms(frame["timestamp"]))
    feeder_codes, feeders = _factorize(frame["feeder_id"], "feeder_id")
    order = np.lexsort((np.arange(n), feeder_codes, slots))  # stable: a meter's readings keep their order
    s, f = slots[order], feeder_codes[order]
    starts = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (f[1:] != f[:-1])])
    ends = np.r_[starts[1:], n]
    bounds, names, ids = [], [], []
    for start, end in zip(starts.tolist(), ends.tolist()):
        feeder = str(feeders[f[start]])
        for part, chunk_start in enumerate(range(start, end, max_readings)):
            bounds.append((chunk_start, min(end, chunk_start + max_readings)))
            names.append(feeder)
            ids.append(f"{feeder}-{int(s[start])}-{part}")
    return BatchPlan(order, bounds, names, ids)


def feeder_batches(frame: pd.DataFrame, *, head_end_id: str | None = None,
                   max_readings: int = DEFAULT_MAX_READINGS_PER_BATCH) -> Iterator[dict[str, Any]]:
    """``MeterReadingBatch`` dicts for a frame in delivery order (see :func:`plan_batches`)."""
    plan = plan_batches(frame, max_readings)
    records = list(reading_records(frame.iloc[plan.order]))
    uploaded_at = int(time.time() * 1000)
    for (start, end), feeder, batch_id in zip(plan.bounds, plan.feeders, plan.batch_ids):
        yield {"batch_id": batch_id, "feeder_id": feeder, "head_end_id": head_end_id,
               "uploaded_at": uploaded_at, "readings": records[start:end]}


# -- messages --------------------------------------------------------------------------------

@dataclass
class EncodedMessages:
    """Ready-to-send readings-topic messages and how many readings each carries."""

    keys: list[bytes]
    values: list[bytes]
    readings: list[int] | None = None
    """Readings per message; ``None`` means one each (single readings)."""

    def __len__(self) -> int:
        return len(self.values)


def wire_header(serde: Any, name: str) -> bytes | None:
    """The bytes ``serde.encode(name, ...)`` puts before the Avro body, if this serde is known."""
    wire_format = getattr(serde, "wire_format", None)
    if wire_format == "single-object":
        return SINGLE_OBJECT_MAGIC + serde.catalog.reader(name).fingerprint
    if wire_format == "confluent":
        return CONFLUENT_MAGIC + serde.schema_id(name).to_bytes(4, "big")
    return None


class ReadingEncoder:
    """Encodes frames of readings for a serde, vectorised when the schemas allow it."""

    def __init__(self, serde: Any, *, vectorised: bool = True) -> None:
        self.serde = serde
        self._headers: dict[str, bytes] = {}
        self.reading_plan: list[tuple[str, str]] | None = None
        self.batch_plan: list[tuple[str, str]] | None = None
        self.vectorised = vectorised and self._plan()

    def _plan(self) -> bool:
        """Plan both records' fields from the serde's current schemas; False if that cannot be done."""
        catalog = getattr(self.serde, "catalog", None)
        if catalog is None or getattr(self.serde, "wire_format", None) not in ("single-object", "confluent"):
            return False
        self.reading_plan = field_plan(catalog.reader(METER_READING).raw)
        self.batch_plan = field_plan(catalog.reader(METER_READING_BATCH).raw)
        if self.reading_plan is None or self.batch_plan is None or \
                [kind for _, kind in self.batch_plan].count(_READINGS) != 1:
            log.warning("the current %s or %s schema has a field type the vectorised encoder cannot write; "
                        "encoding record by record (slower)", METER_READING, METER_READING_BATCH)
            return False
        return True

    def _header(self, name: str) -> bytes:
        header = self._headers.get(name)
        if header is None:
            header = self._headers[name] = wire_header(self.serde, name) or b""
        return header

    def readings(self, frame: pd.DataFrame) -> Iterator[EncodedMessages]:
        """One message per reading, keyed by feeder, in frame order, a chunk at a time."""
        for start in range(0, len(frame), _ENCODE_CHUNK_ROWS):
            chunk = frame.iloc[start:start + _ENCODE_CHUNK_ROWS]
            keys = [f.encode() for f in chunk["feeder_id"].tolist()]
            if self.vectorised:
                blob, offsets = encode_reading_bodies(chunk, self.reading_plan, prefix=self._header(METER_READING))
                bounds = offsets.tolist()
                values = [blob[a:b] for a, b in pairwise(bounds)]
            else:
                values = [self.serde.encode(METER_READING, r) for r in reading_records(chunk)]
            yield EncodedMessages(keys, values)

    def batches(self, frame: pd.DataFrame, *, head_end_id: str | None = None,
                max_readings: int = DEFAULT_MAX_READINGS_PER_BATCH) -> Iterator[EncodedMessages]:
        """Head-end batches (one per feeder and delivery slot), keyed by feeder, a chunk at a time."""
        plan = plan_batches(frame, max_readings)
        uploaded_at = int(time.time() * 1000)
        batch_index = 0
        for start in range(0, len(plan.order), _ENCODE_CHUNK_ROWS):
            # Whole batches per chunk: extend the chunk to the end of the batch it cuts.
            first = batch_index
            while batch_index < len(plan.bounds) and plan.bounds[batch_index][0] < start + _ENCODE_CHUNK_ROWS:
                batch_index += 1
            if batch_index == first:
                continue
            lo, hi = plan.bounds[first][0], plan.bounds[batch_index - 1][1]
            rows = frame.iloc[plan.order[lo:hi]]
            picked = range(first, batch_index)
            keys = [plan.feeders[i].encode() for i in picked]
            counts = [plan.bounds[i][1] - plan.bounds[i][0] for i in picked]
            if self.vectorised:
                values = self._encode_batches(rows, lo, plan, picked, head_end_id, uploaded_at)
            else:
                records = list(reading_records(rows))
                values = [self.serde.encode(METER_READING_BATCH, {
                    "batch_id": plan.batch_ids[i], "feeder_id": plan.feeders[i], "head_end_id": head_end_id,
                    "uploaded_at": uploaded_at,
                    "readings": records[plan.bounds[i][0] - lo:plan.bounds[i][1] - lo]}) for i in picked]
            yield EncodedMessages(keys, values, counts)

    def _encode_batches(self, rows: pd.DataFrame, lo: int, plan: BatchPlan, picked: range,
                        head_end_id: str | None, uploaded_at: int) -> list[bytes]:
        blob, offsets = encode_reading_bodies(rows, self.reading_plan)
        header = self._header(METER_READING_BATCH)
        values = []
        for i in picked:
            a, b = plan.bounds[i][0] - lo, plan.bounds[i][1] - lo
            record = {"batch_id": plan.batch_ids[i], "feeder_id": plan.feeders[i], "head_end_id": head_end_id,
                      "uploaded_at": uploaded_at}
            parts = [header]
            for field, kind in self.batch_plan:
                if kind == _READINGS:
                    parts += [avro_long(b - a), blob[offsets[a]:offsets[b]], b"\x00"] if b > a else [b"\x00"]
                else:
                    parts.append(_encode_value(kind, record.get(field)))
            values.append(b"".join(parts))
        return values
