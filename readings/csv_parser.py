"""Read and validate meter-reading CSVs, row by row, without losing the good rows.

Two shapes are accepted:

* long format ``timestamp,meter_id,kwh`` (optional ``feeder_id``, ``interval_seconds``,
  ``quality_flags``; ``energy_kwh`` is accepted for ``kwh``), many meters in one file;
* the single-meter ``timestamp,consumption`` export most meters and portals produce; the meter id
  comes from the caller (``--meter-id``) or the file name.

Every rejected row keeps its 1-based line number in the file (the header is line 1; blank lines
count, as in any editor), its text exactly as it appears in the file, and a reason naming the
bad field, so it can go to the dead-letter topic while the rows around it are delivered. A row
with the wrong number of fields is one rejected row, not an unreadable file.

Validation is vectorised with pandas: a million rows parse in a few seconds. Files without
quote characters (what meters and the simulator write) are split line by line, which keeps the
line numbers exact for free; files with quoted fields go through Python's ``csv`` module, which
knows where a quoted field spans lines.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from foundation.timeutil import infer_interval_seconds
from schemas.limits import CONTROL_CHARACTERS_PATTERN, MAX_ID_LENGTH, identifier_problem

LONG_COLUMNS = ("timestamp", "meter_id", "kwh")
SINGLE_METER_COLUMNS = ("timestamp", "consumption")

MAX_HEADER_CHARS = 16_384
"""Longest header line. A readings header names a handful of columns (about 60 characters); 16 KiB
leaves room for a wide portal export. Checked before anything else is parsed: a 1.5 MB header of
200,000 columns took 19 s and 1.1 GB before it was refused, and a header field over the csv
module's 131,072-character field limit crashed the parser."""
MAX_COLUMNS = 256
"""Most columns a header may name: six are used; exports carry a few dozen at most."""
MAX_LINE_CHARS = 65_536
"""Longest data line; a reading's line is under 200 characters. A longer one is a rejected row (its
text kept only up to this length), never split into fields: a 20 MB line became a 20 MB meter id."""
REASON_VALUE_CHARS = 80
"""How much of a bad value a rejection reason quotes."""


class CsvFormatError(ValueError):
    """The file as a whole cannot be read (wrong columns, not CSV); says what was expected."""


@dataclass
class RejectedRow:
    row_number: int
    """1-based line number in the file where the row starts (the header is line 1)."""
    raw_text: str
    """The row as it appears in the file."""
    reason: str


@dataclass
class ParsedCsv:
    readings: pd.DataFrame
    """Valid rows in file order: timestamp (datetime64[ms, UTC]), meter_id, kwh, row_number, feeder_id,
    interval_seconds, and quality_flags when the file has that column."""
    rejected: list[RejectedRow] = field(default_factory=list)
    """Invalid rows, by row number."""
    shape: str = "long"
    """``long`` or ``single-meter``."""

    @property
    def total_rows(self) -> int:
        return len(self.readings) + len(self.rejected)


@dataclass
class _RawRows:
    """The file split into rows of text fields, before any validation."""

    columns: list[str]
    fields: pd.DataFrame
    """One str column per header column, stripped; rows with the right field count only."""
    row_numbers: np.ndarray
    raw_text: np.ndarray
    rejected: list[RejectedRow]
    """Rows with the wrong number of fields."""
    padded: bool = True
    """Whether some field may have leading or trailing whitespace (stripping a million fields costs)."""


def _read_text(source: Path | str | IO[str]) -> tuple[str, str | None]:
    """The whole text and the file name (for a single-meter file's meter id), if there is one."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8-sig"), path.name
        except UnicodeDecodeError as exc:
            raise CsvFormatError(f"not UTF-8 text: {exc}") from exc
    text = source.read()
    name = getattr(source, "name", None)
    return text.removeprefix("\ufeff"), name if isinstance(name, str) else None


def _header_columns(header: str) -> list[str]:
    return [c.strip().lower() for c in next(csv.reader([header]))]


def _check_header(header: str) -> None:
    """Refuse a header too long or too wide, before any row is split (see ``MAX_HEADER_CHARS``)."""
    columns = header.count(",") + 1
    if columns > MAX_COLUMNS:
        raise CsvFormatError(f"the header names {columns:,} columns; the limit is {MAX_COLUMNS}")
    if len(header) > MAX_HEADER_CHARS:
        raise CsvFormatError(f"the header line is {len(header):,} characters long; the limit is {MAX_HEADER_CHARS:,} "
                             "(is this a readings CSV?)")


def _too_long(line: str) -> str:
    return f"the line is {len(line):,} characters long; the limit is {MAX_LINE_CHARS:,}"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + "…"


def _wrong_width(expected: list[str], found: int) -> str:
    return f"expected {len(expected)} fields ({','.join(expected)}), found {found}"


def _split_plain(lines: list[str]) -> _RawRows:
    """Rows of a file without quotes: one line, one row; split with pandas' C parser.

    Fields per line are counted on the UTF-8 bytes with numpy (a comma or newline byte never
    occurs inside a multi-byte character), so checking a million lines costs milliseconds.
    """
    columns = _header_columns(lines[0])
    body = lines[1:]
    if not body:
        empty = pd.DataFrame({c: pd.Series(dtype=str) for c in columns})
        return _RawRows(columns, empty, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object), [], False)
    data = np.frombuffer(("\n".join(body) + "\n").encode("utf-8"), dtype=np.uint8)
    line_ends = np.flatnonzero(data == ord("\n"))
    commas_before_end = np.searchsorted(np.flatnonzero(data == ord(",")), line_ends)
    widths = np.diff(commas_before_end, prepend=0) + 1
    # Whitespace can only pad a field next to a comma or a line boundary.
    boundaries = np.flatnonzero((data == ord(",")) | (data == ord("\n")))
    neighbours = np.r_[0, boundaries - 1, boundaries + 1]
    neighbours = data[neighbours[(neighbours >= 0) & (neighbours < len(data))]]
    padded = bool(np.isin(neighbours, (ord(" "), ord("\t"))).any())
    row_numbers = np.arange(2, len(body) + 2)
    text = np.array(body, dtype=object)
    # Blank lines are not rows (but keep their numbers); only comma-free lines can be blank.
    candidates = np.flatnonzero(widths == 1)
    blank = np.zeros(len(body), dtype=bool)
    blank[candidates] = [not body[i].strip() for i in candidates.tolist()]
    ok = (widths == len(columns)) & ~blank
    wrong = ~ok & ~blank
    lengths = np.fromiter(map(len, body), dtype=np.int64, count=len(body))
    long_lines = lengths > MAX_LINE_CHARS
    ok &= ~long_lines
    wrong &= ~long_lines
    rejected = [RejectedRow(int(n), t, _wrong_width(columns, int(w)))
                for n, t, w in zip(row_numbers[wrong], text[wrong], widths[wrong])]
    rejected += [RejectedRow(int(n), _clip(t), _too_long(t)) for n, t in zip(row_numbers[long_lines], text[long_lines])]
    good = text[ok]
    if len(good):
        fields = pd.read_csv(io.StringIO("\n".join(good)), header=None, names=list(range(len(columns))), dtype=str,
                             keep_default_na=False, skip_blank_lines=False, quoting=csv.QUOTE_NONE)
        fields.columns = columns
    else:
        fields = pd.DataFrame({c: pd.Series(dtype=str) for c in columns})
    return _RawRows(columns, fields, row_numbers[ok], good, rejected, padded)


def _split_quoted(text: str, lines: list[str]) -> _RawRows:
    """Rows of a file with quoted fields, which may span lines; the csv module tracks the lines."""
    reader = csv.reader(io.StringIO(text))
    try:
        columns = [c.strip().lower() for c in next(reader)]
        records, numbers, raw, rejected = [], [], [], []
        last_line = reader.line_num
        for record in reader:
            first_line, last_line = last_line + 1, reader.line_num
            if not record or all(not f.strip() for f in record) and len(record) <= 1:
                continue
            row_text = "\n".join(lines[first_line - 1:last_line])
            if len(row_text) > MAX_LINE_CHARS:
                rejected.append(RejectedRow(first_line, _clip(row_text), _too_long(row_text)))
                continue
            if len(record) != len(columns):
                rejected.append(RejectedRow(first_line, row_text, _wrong_width(columns, len(record))))
                continue
            records.append(record)
            numbers.append(first_line)
            raw.append(row_text)
    except csv.Error as exc:
        raise CsvFormatError(f"not a readable CSV file: {exc}") from exc
    fields = pd.DataFrame(records, columns=columns, dtype=str) if records else \
        pd.DataFrame({c: pd.Series(dtype=str) for c in columns})
    return _RawRows(columns, fields, np.array(numbers, dtype=np.int64), np.array(raw, dtype=object), rejected)


def _parse_timestamps(values: pd.Series) -> pd.Series:
    """UTC timestamps; naive ones are taken as UTC. Unparseable values become NaT.

    ISO 8601 in any of its variants parses vectorised; the rest is tried as one inferred format
    (vectorised again), and only what still fails is parsed value by value. Bare numbers are
    never guessed at: a date parser would read "5" as the 5th of this month.
    """
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    failed = values[parsed.isna().to_numpy() & values.ne("").to_numpy()]
    retry = failed.index[failed.str.contains(r"\d", regex=True) & failed.str.contains(r"[-/:. ]", regex=True)]
    if len(retry):
        stragglers = values[retry]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format": handled below
            again = pd.to_datetime(stragglers, utc=True, errors="coerce")
        still = again.isna()
        if still.any():
            again[still] = pd.to_datetime(stragglers[still], utc=True, errors="coerce", format="mixed")
        parsed[retry] = again
    return parsed.dt.as_unit("ms")


def parse_readings_csv(
    source: Path | str | IO[str], *, meter_id: str | None = None, feeder_id: str | None = None
) -> ParsedCsv:
    """Parse and validate a readings CSV; see the module docstring for the accepted shapes.

    ``meter_id`` names the meter of a single-meter file (default: the file name's stem);
    ``feeder_id`` is the feeder of rows without one (default: the meter is its own feeder).
    """
    text, name = _read_text(source)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].strip():
        raise CsvFormatError("the CSV file is empty (no header line)")
    _check_header(lines[0])
    rows = _split_quoted(text, lines) if '"' in text else _split_plain(lines)
    raw = rows.fields
    if "energy_kwh" in raw.columns and "kwh" not in raw.columns:
        raw = raw.rename(columns={"energy_kwh": "kwh"})
    used = [c for c in (*LONG_COLUMNS, *SINGLE_METER_COLUMNS, "feeder_id", "interval_seconds", "quality_flags")
            if c in raw.columns]
    raw = pd.DataFrame({c: raw[c].str.strip() if rows.padded else raw[c] for c in used}, index=raw.index)
    if all(c in raw.columns for c in LONG_COLUMNS):
        shape, energy_col = "long", "kwh"
        meters = raw["meter_id"]
    elif all(c in raw.columns for c in SINGLE_METER_COLUMNS):
        shape, energy_col = "single-meter", "consumption"
        meter_id = meter_id or (Path(name).stem if name else None)
        if not meter_id:
            raise CsvFormatError("a timestamp,consumption file needs a meter id (--meter-id)")
        problem = identifier_problem(meter_id)
        if problem is not None:
            raise CsvFormatError(f"the meter id {meter_id[:40]!r} (from --meter-id or the file name) {problem}")
        meters = pd.Series(meter_id, index=raw.index, dtype=str)
    else:
        raise CsvFormatError(
            f"unrecognised columns {rows.columns}: expected {','.join(LONG_COLUMNS)} "
            f"or {','.join(SINGLE_METER_COLUMNS)}"
        )

    timestamps = _parse_timestamps(raw["timestamp"])
    energy_text = raw[energy_col]
    energy = pd.to_numeric(energy_text, errors="coerce")
    given_interval = pd.to_numeric(raw["interval_seconds"], errors="coerce") if "interval_seconds" in raw else None

    reasons = pd.Series("", index=raw.index, dtype=object)

    def flag(mask: pd.Series, reason: str, value: pd.Series | None = None, *, quote: bool = True) -> None:
        """Give rows matching ``mask`` (and no earlier reason) the reason, followed by their value."""
        mask = mask & reasons.eq("")
        if not mask.any():
            return
        if value is None:
            reasons[mask] = reason
        else:
            shown = value[mask].map(lambda v: v if len(v) <= REASON_VALUE_CHARS else v[:REASON_VALUE_CHARS] + "…")
            reasons[mask] = reason + " " + (shown.map(repr) if quote else shown)

    def flag_ids(ids: pd.Series, column: str) -> None:
        """Ids over the shared length limit or with control characters (schemas.limits)."""
        lengths = ids.str.len()
        long = lengths > MAX_ID_LENGTH
        if long.any():
            flag(long, f"{column} is", lengths.astype(str) + f" characters long; the limit is {MAX_ID_LENGTH}",
                 quote=False)
        flag(ids.str.contains(CONTROL_CHARACTERS_PATTERN, regex=True), f"{column} contains a control character")

    flag(meters.eq(""), "missing meter_id")
    flag_ids(meters, "meter_id")
    if "feeder_id" in raw.columns:
        flag_ids(raw["feeder_id"], "feeder_id")
    flag(raw["timestamp"].eq(""), "missing timestamp")
    flag(timestamps.isna(), "unparseable timestamp", raw["timestamp"])
    flag(energy_text.eq(""), f"missing {energy_col}")
    flag(energy.isna(), f"non-numeric {energy_col}", energy_text)
    # Finite values of either sign: a net meter of a solar prosumer reads below zero while it exports.
    flag(~np.isfinite(energy.fillna(0.0)), f"{energy_col} is not finite:", energy_text)
    if given_interval is not None:
        text_interval = raw["interval_seconds"]
        bad_interval = text_interval.ne("") & ~((given_interval > 0) & (given_interval % 1 == 0))
        flag(bad_interval, "interval_seconds is not a positive whole number of seconds:", text_interval)

    bad = reasons.ne("").to_numpy()
    rejected = rows.rejected + [
        RejectedRow(int(n), str(t), str(r))
        for n, t, r in zip(rows.row_numbers[bad], rows.raw_text[bad], reasons[bad])
    ]
    rejected.sort(key=lambda row: row.row_number)

    good = ~bad
    readings = pd.DataFrame({
        "timestamp": timestamps[good],
        "meter_id": meters[good],
        "kwh": energy[good].astype(float),
        "row_number": rows.row_numbers[good],
    }).reset_index(drop=True)
    # A meter without a feeder is its own feeder: it still always lands in one partition.
    fallback = pd.Series(feeder_id, index=readings.index, dtype=str) if feeder_id else readings["meter_id"]
    if "feeder_id" in raw.columns:
        given = pd.Series(raw["feeder_id"].to_numpy()[good], index=readings.index)
        readings["feeder_id"] = given.where(given.ne(""), fallback)
    else:
        readings["feeder_id"] = fallback
    inferred = infer_interval_seconds(readings["timestamp"], readings["meter_id"])
    if given_interval is not None:
        given = pd.Series(given_interval.to_numpy()[good], index=readings.index)
        readings["interval_seconds"] = given.where(given > 0, inferred).astype("int64")
    else:
        readings["interval_seconds"] = inferred
    if "quality_flags" in raw.columns:
        readings["quality_flags"] = raw["quality_flags"].to_numpy()[good]
    return ParsedCsv(readings=readings, rejected=rejected, shape=shape)
