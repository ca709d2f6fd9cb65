"""Read and validate meter-reading CSVs, row by row, without losing the good rows.

Two shapes are accepted:

* long format ``timestamp,meter_id,kwh`` (optional ``feeder_id``, ``interval_seconds``; ``energy_kwh``
  is accepted for ``kwh``), many meters in one file;
* the single-meter ``timestamp,consumption`` export most meters and portals produce; the meter id
  comes from the caller (``--meter-id``) or the file name.

Validation is vectorised with pandas (a million rows parse in a few seconds) and every rejected
row keeps its 1-based line number (the header is line 1), its text and a reason naming the bad
field, so it can go to the dead-letter topic while the rows around it are delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

LONG_COLUMNS = ("timestamp", "meter_id", "kwh")
SINGLE_METER_COLUMNS = ("timestamp", "consumption")


class CsvFormatError(ValueError):
    """The file as a whole cannot be read (wrong columns, not CSV); says what was expected."""


@dataclass
class RejectedRow:
    row_number: int
    raw_text: str
    reason: str


@dataclass
class ParsedCsv:
    readings: pd.DataFrame
    """Valid rows: timestamp (datetime64[ms, UTC]), meter_id, feeder_id, kwh, interval_seconds, row_number."""
    rejected: list[RejectedRow] = field(default_factory=list)
    shape: str = "long"

    @property
    def total_rows(self) -> int:
        return len(self.readings) + len(self.rejected)


def _parse_timestamps(values: pd.Series) -> pd.Series:
    """UTC timestamps; naive ones are taken as UTC. Unparseable values become NaT."""
    parsed = pd.to_datetime(values, utc=True, errors="coerce")
    retry = parsed.isna() & values.str.strip().ne("")
    if retry.any():  # a file mixing formats: parse the stragglers one by one
        parsed.loc[retry] = pd.to_datetime(values[retry], utc=True, errors="coerce", format="mixed")
    return parsed.dt.as_unit("ms")


def infer_interval_seconds(timestamps: pd.Series, meter_ids: pd.Series) -> pd.Series:
    """Per-meter interval: the most common spacing of its readings (the smallest on a tie), which
    gaps from missing or rejected rows do not move; 900 s if the meter has a single reading."""
    frame = pd.DataFrame({"t": timestamps.astype("int64") // 1000, "m": meter_ids})
    frame = frame.sort_values(["m", "t"])
    gaps = frame.groupby("m", sort=False)["t"].diff()
    positive = pd.DataFrame({"m": frame["m"], "gap": gaps})[gaps > 0]
    counts = positive.groupby(["m", "gap"]).size().rename("n").reset_index()
    counts = counts.sort_values(["m", "n", "gap"], ascending=[True, False, True])
    typical = counts.drop_duplicates("m").set_index("m")["gap"]
    return meter_ids.map(typical).fillna(900).astype("int64")


def parse_readings_csv(
    source: Path | str | IO[str], *, meter_id: str | None = None, feeder_id: str | None = None
) -> ParsedCsv:
    """Parse and validate a readings CSV; see the module docstring for the accepted shapes."""
    try:
        raw = pd.read_csv(source, dtype=str, keep_default_na=False, skipinitialspace=True, on_bad_lines="error")
    except pd.errors.ParserError as exc:
        raise CsvFormatError(f"not a readable CSV file: {exc}") from exc
    except pd.errors.EmptyDataError as exc:
        raise CsvFormatError("the CSV file is empty") from exc
    raw.columns = [c.strip().lower() for c in raw.columns]
    if "energy_kwh" in raw.columns and "kwh" not in raw.columns:
        raw = raw.rename(columns={"energy_kwh": "kwh"})
    if all(c in raw.columns for c in LONG_COLUMNS):
        shape = "long"
        energy_col = "kwh"
        meters = raw["meter_id"].str.strip()
    elif all(c in raw.columns for c in SINGLE_METER_COLUMNS):
        shape = "single-meter"
        energy_col = "consumption"
        if meter_id is None:
            name = getattr(source, "name", source)
            meter_id = Path(str(name)).stem if isinstance(name, (str, Path)) else None
        if not meter_id:
            raise CsvFormatError("a timestamp,consumption file needs a meter id (--meter-id)")
        meters = pd.Series(meter_id, index=raw.index, dtype=str)
    else:
        raise CsvFormatError(
            f"unrecognised columns {list(raw.columns)}: expected {','.join(LONG_COLUMNS)} "
            f"or {','.join(SINGLE_METER_COLUMNS)}"
        )

    timestamps = _parse_timestamps(raw["timestamp"])
    energy_text = raw[energy_col].str.strip()
    energy = pd.to_numeric(energy_text, errors="coerce")
    row_numbers = np.arange(2, len(raw) + 2)

    reasons = pd.Series("", index=raw.index, dtype=object)

    def flag(mask: pd.Series, message: pd.Series | str) -> None:
        mask = mask & reasons.eq("")
        reasons[mask] = message[mask] if isinstance(message, pd.Series) else message

    flag(meters.eq(""), "missing meter_id")
    flag(timestamps.isna(), "unparseable timestamp " + raw["timestamp"].map(repr))
    flag(energy.isna(), f"non-numeric {energy_col} " + energy_text.map(repr))
    flag(~np.isfinite(energy.fillna(0.0)), f"{energy_col} is not finite: " + energy_text.map(repr))
    flag(energy < 0, f"negative {energy_col} " + energy_text)

    bad = reasons.ne("")
    rejected: list[RejectedRow] = []
    if bad.any():
        text = raw[bad].apply(lambda row: ",".join(row.astype(str)), axis=1)
        rejected = [
            RejectedRow(int(n), t, r) for n, t, r in zip(row_numbers[bad.to_numpy()], text, reasons[bad])
        ]

    good = ~bad
    readings = pd.DataFrame({
        "timestamp": timestamps[good],
        "meter_id": meters[good],
        "kwh": energy[good].astype(float),
        "row_number": row_numbers[good.to_numpy()],
    })
    # A meter without a feeder is its own feeder: it still always lands in one partition.
    fallback = pd.Series(feeder_id, index=readings.index, dtype=str) if feeder_id else readings["meter_id"]
    if "feeder_id" in raw.columns:
        given = raw.loc[good, "feeder_id"].str.strip().reset_index(drop=True)
        given.index = readings.index
        readings["feeder_id"] = given.where(given.ne(""), fallback)
    else:
        readings["feeder_id"] = fallback
    if "interval_seconds" in raw.columns:
        given = pd.to_numeric(raw.loc[good, "interval_seconds"], errors="coerce")
        inferred = infer_interval_seconds(readings["timestamp"], readings["meter_id"])
        readings["interval_seconds"] = given.where(given > 0, inferred).astype("int64")
    else:
        readings["interval_seconds"] = infer_interval_seconds(readings["timestamp"], readings["meter_id"])
    return ParsedCsv(readings=readings.reset_index(drop=True), rejected=rejected, shape=shape)
