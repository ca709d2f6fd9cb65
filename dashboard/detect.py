"""Batch detection of an uploaded CSV: the engine behind ``wattsup detect``, answered as JSON.

Parsing (``readings.csv_parser.parse_readings_csv``) and scoring
(``detection.offline.detect_frame``, the stream's features and model) are the
project's own; this module only picks the model, and builds the response without a Python
object per reading: a million-row upload's per-reading series is serialised column-wise with
pandas, which is what keeps the answer in seconds.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dashboard.timeutil import iso

log = logging.getLogger(__name__)

EXAMPLE_CSV = Path(__file__).resolve().parent / "example_readings.csv"


class UploadError(ValueError):
    """The upload as a whole is not a readings CSV; the text says what is wrong (answered with 400)."""

    status = 400

    def __init__(self, message: str, rejected_rows: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.rejected_rows = rejected_rows or []


class NotEnoughToLearn(UploadError):
    """A readings CSV, but with no trained detector too little of it to learn usual usage from (422)."""

    status = 422


@dataclass
class DetectTimings:
    parse_seconds: float = 0.0
    detect_seconds: float = 0.0
    encode_seconds: float = 0.0


class ModelCache:
    """The newest detector in the model directory, loaded once per version."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._loaded: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        from detection.features import FEATURE_NAMES
        from models.artifacts import ModelMismatchError, latest_version, load_model

        newest = latest_version(self.model_dir)
        if newest is None:
            return None
        with self._lock:
            if self._loaded is None or self._loaded.version != newest:
                try:
                    self._loaded = load_model(self.model_dir, newest, expected_features=FEATURE_NAMES)
                except ModelMismatchError as exc:
                    log.warning("not using model %s for uploads (fitting on the input instead): %s", newest, exc)
                    return None
            return self._loaded


def _iso_column(values: pd.Series) -> np.ndarray:
    """ISO 8601 UTC strings for a datetime column, vectorised.

    Interval data repeats the same few thousand timestamps across meters, so each distinct
    timestamp is formatted once and the strings are gathered back (formatting a million values
    one by one took seconds).
    """
    ms = pd.DatetimeIndex(values).as_unit("ms").asi8
    distinct, inverse = np.unique(ms, return_inverse=True)
    unit = "ms" if (distinct % 1000).any() else "s"
    text = np.char.add(np.datetime_as_string(distinct.astype("datetime64[ms]"), unit=unit).astype(str), "Z")
    return text.astype(object)[inverse.reshape(-1)]


def parse_upload(data: bytes, filename: str | None) -> Any:
    from readings.csv_parser import CsvFormatError, parse_readings_csv

    if b"\x00" in data[:4096]:
        raise UploadError("the file is binary, not a CSV text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadError(f"the file is not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    stem = Path(filename or "upload").stem or "upload"
    try:
        parsed = parse_readings_csv(io.StringIO(text), meter_id=stem)
    except CsvFormatError as exc:
        raise UploadError(f"not a readings CSV: {exc}") from exc
    rejected = [{"row": r.row_number, "reason": r.reason} for r in parsed.rejected]
    if parsed.readings.empty:
        raise UploadError(f"no valid readings in the file ({len(rejected)} rows rejected"
                          + (f"; row {rejected[0]['row']}: {rejected[0]['reason']})" if rejected else ")"), rejected)
    return parsed, rejected


MAX_DUPLICATE_ROWS_LISTED = 1000
"""Repeated rows listed in the answer (all are counted): a file pasted twice would otherwise double the answer."""


def split_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The rows to score (the first of each meter and time), and what happened to each later repeat.

    Policy (issue 13): a row repeating an earlier one exactly (same kWh) is dropped; one with another
    value for the same meter and time is rejected, the first kept: which of two meter values is right
    cannot be known, and scoring both would count the interval twice.
    """
    repeated = frame.duplicated(["meter_id", "timestamp"], keep="first").to_numpy()
    if not repeated.any():
        return frame, []
    groups = frame.groupby(["meter_id", "timestamp"], sort=False).ngroup().to_numpy()
    first_of_group = pd.Series(np.arange(len(frame))).groupby(groups).transform("first").to_numpy()
    out = []
    rows, kwh, stamps = frame["row_number"].to_numpy(), frame["kwh"].to_numpy(), _iso_column(frame["timestamp"])
    meters = frame["meter_id"].to_numpy()
    for i in np.flatnonzero(repeated).tolist():
        first = int(first_of_group[i])
        exact = kwh[i] == kwh[first]
        out.append({"row": int(rows[i]), "of_row": int(rows[first]), "meter_id": str(meters[i]),
                    "timestamp": str(stamps[i]), "kwh": float(kwh[i]), "action": "dropped" if exact else "rejected",
                    "reason": f"exact duplicate of row {rows[first]}" if exact else
                    f"same meter and time as row {rows[first]}, which is kept ({kwh[first]:g} kWh)"})
    return frame[~repeated].reset_index(drop=True), out


def detect_upload(data: bytes, filename: str | None, model: Any, sensitivity: float = 1.0,
                  timings: DetectTimings | None = None) -> bytes:
    """The JSON body of ``POST /api/v1/detect`` for an uploaded file (raises :class:`UploadError`)."""
    from detection.offline import detect_frame

    timings = timings or DetectTimings()
    t0 = time.perf_counter()
    parsed, rejected = parse_upload(data, filename)
    frame, duplicates = split_duplicates(parsed.readings)
    t1 = time.perf_counter()
    try:
        result = detect_frame(frame, model, sensitivity=sensitivity)
    except ValueError as exc:
        if model is not None:
            raise
        # No trained detector: one is fitted on the file, and models.training refuses too little history.
        raise NotEnoughToLearn(f"too few readings to learn this file's usual usage from ({exc}); upload at least 3 days "
                               "per meter, or train a detector first (wattsup train)", rejected) from exc
    t2 = time.perf_counter()

    detected_at = iso(int(time.time() * 1000))
    anomalies: list[dict[str, Any]] = []
    if len(result.anomalies):
        a = result.anomalies
        stamps = _iso_column(a["timestamp"])
        for i, row in enumerate(a.itertuples(index=False)):
            anomalies.append({
                "meter_id": row.meter_id, "feeder_id": row.feeder_id, "timestamp": str(stamps[i]),
                "observed": _num(row.observed), "baseline": _num(row.baseline), "expected": _num(row.expected),
                "lower": _num(row.lower), "upper": _num(row.upper), "residual": _num(row.residual),
                "band_residual": _num(row.band_residual), "score": _num(row.score), "severity": row.severity,
                "kind": row.kind if isinstance(row.kind, str) and row.kind else None,
                "causes": json.loads(row.causes_json), "model_version": row.model_version, "detected_at": detected_at,
            })
    scores = result.scores
    series_frame = pd.DataFrame({
        "timestamp": _iso_column(scores["timestamp"]),
        "kwh": frame["kwh"].to_numpy(),
        # The meter's usual usage, not a forecast (a file has none): named so the chart cannot call it one.
        "baseline": scores["baseline"].to_numpy(),
        "score": scores["score"].to_numpy(),
        "flag": scores["flag"].to_numpy(),
        "severity": scores["severity"].replace("", None).to_numpy(),
    })
    # One sort by (meter, time), then each meter's rows are a contiguous slice serialised by pandas.
    codes, names = pd.factorize(scores["meter_id"].astype(str))
    order = np.lexsort((pd.DatetimeIndex(scores["timestamp"]).as_unit("ms").asi8, codes))
    series_frame = series_frame.iloc[order]
    sorted_codes = codes[order]
    bounds = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1], True])
    parts = [f"{json.dumps(str(names[sorted_codes[s]]))}:"
             f"{series_frame.iloc[s:e].to_json(orient='records', double_precision=6)}"
             for s, e in zip(bounds[:-1], bounds[1:])]
    head = json.dumps({"model_version": result.model_version, "readings": int(len(frame)),
                       "rejected_rows": rejected, "anomalies": anomalies,
                       "duplicates_dropped": sum(d["action"] == "dropped" for d in duplicates),
                       "duplicates_rejected": sum(d["action"] == "rejected" for d in duplicates),
                       "duplicate_rows": duplicates[:MAX_DUPLICATE_ROWS_LISTED]})
    body = head[:-1] + ',"series":{' + ",".join(parts) + "}}"
    t3 = time.perf_counter()
    timings.parse_seconds, timings.detect_seconds, timings.encode_seconds = t1 - t0, t2 - t1, t3 - t2
    log.info("detect upload: %d readings, %d rejected, %d anomalies; parse %.2f s, detect %.2f s, encode %.2f s",
             len(frame), len(rejected), len(anomalies), t1 - t0, t2 - t1, t3 - t2)
    return body.encode("utf-8")


def _num(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if np.isfinite(f) else None
