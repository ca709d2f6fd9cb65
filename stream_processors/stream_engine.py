"""The detection engine as the Faust worker runs it: state from changelog tables, forecasts, reloads.

Changelog layout, per feeder (all keys start with the feeder id, so they land in the feeder's
partition, see :class:`stream_processors.app.FeederKeyedTable`):

* ``F0001|fast``: the feeder's meter ids and each meter's small state (last reading, run
  counters, slow averages, recent window, remembered timestamps);
* ``F0001|h<slot>`` and ``F0001|d<slot>``: one hour-of-week / hour-of-day slot's baseline for
  all the feeder's meters. A head-end message covers one interval, so it touches one slot of
  each kind: a batch writes a few kilobytes per feeder, not the whole 168-slot baseline.
* ``F0001|forecasts`` (forecasts table): the latest forecast of each meter of the feeder.

The decoded state lives in the engine's :class:`MeterStateStore`; a feeder is (re)loaded from the
table only when the table holds a ``fast`` value other than the one this worker last wrote,
which is exactly the case after changelog recovery or when a rebalance hands over a partition.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.artifacts import LoadedModel, ModelMismatchError, latest_version, load_model
from schemas.serde import FORECAST, SerdeError
from stream_processors import metrics
from stream_processors.engine import DetectionEngine, Thresholds
from stream_processors.meter_state import FEATURE_NAMES, HOD_SLOTS, HOW_SLOTS, MeterStateStore, _slots
from stream_processors.reading_columns import ReadingColumns

log = logging.getLogger(__name__)

_FAST_FIELDS = ("last_ts", "scalars", "window", "window_expected", "seen")
EMITTED_MARGIN_MS = 60_000
"""Anomalies read back from this long before a recovered state was written (clock skew between hosts)."""


def _pack(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Header JSON (with each array's dtype and shape) followed by the arrays' raw bytes.

    This runs for every touched feeder of every micro-batch: raw buffers cost a fraction of
    ``np.savez`` (a zip archive) and need no pickle to read back.
    """
    layout = [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()]
    head = json.dumps({**header, "_arrays": layout}).encode()
    return b"".join([len(head).to_bytes(4, "big"), head, *(np.ascontiguousarray(a).tobytes() for a in arrays.values())])


def _unpack(blob: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    n = int.from_bytes(blob[:4], "big")
    header = json.loads(blob[4:4 + n])
    arrays, offset = {}, 4 + n
    for name, dtype, shape in header.pop("_arrays"):
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        arrays[name] = np.frombuffer(blob, dtype=dt, count=count, offset=offset).reshape(shape).copy()
        offset += count * dt.itemsize
    return header, arrays


@dataclass
class MeterForecast:
    start_ms: int
    step_ms: int
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    model_version: str

    def at(self, ts_ms: int) -> tuple[float, float, float] | None:
        offset = ts_ms - self.start_ms
        if offset < 0 or offset % self.step_ms:
            return None
        i = offset // self.step_ms
        if i >= len(self.expected):
            return None
        return float(self.expected[i]), float(self.lower[i]), float(self.upper[i])


@dataclass
class StreamResult:
    anomalies: list[dict[str, Any]]
    scored: int
    duplicates: int
    touched_feeders: dict[str, tuple[set[int], set[int]]] = field(default_factory=dict)
    feeder_latest_ms: dict[str, int] = field(default_factory=dict)
    """Newest reading timestamp per feeder in the batch (event time)."""


class StreamEngine:
    def __init__(self, model_dir: Path, serde: Any, *, sensitivity: Callable[[str], float] | None = None,
                 thresholds: Thresholds | None = None,
                 emitted_since: Callable[[str, int], set[tuple[str, int]]] | None = None) -> None:
        """``emitted_since(feeder, since_ms)`` reads back anomalies already on the topic, see
        :mod:`stream_processors.emitted_anomalies`; without it a recovered worker may repeat
        anomalies a crashed one emitted just before it died."""
        self.model_dir = model_dir
        self.serde = serde
        self.engine = DetectionEngine(self._load_model(), MeterStateStore(), sensitivity=sensitivity,
                                      thresholds=thresholds)
        self.state_table: Any = None
        self.forecast_table: Any = None
        self.feeder_meters: dict[str, list[str]] = {}
        self._written: dict[str, bytes] = {}
        self.forecasts: dict[str, MeterForecast] = {}
        self._forecast_blobs: dict[str, dict[str, bytes]] = {}
        """feeder -> meter -> the Forecast record as received."""
        self._members: dict[str, set[str]] = {}
        self.emitted_since = emitted_since
        self._already_emitted: dict[str, set[tuple[str, int]]] = {}
        """feeder -> (meter, timestamp) of anomalies a predecessor emitted after its last state write."""
        self._feeder_rows: dict[str, np.ndarray] = {}
        """feeder -> store rows of ``feeder_meters[feeder]``, for persisting without lookups."""
        self._publish_model_info()

    # -- model ---------------------------------------------------------------------------
    def _load_model(self, version: str | None = None) -> LoadedModel | None:
        try:
            return load_model(self.model_dir, version, expected_features=FEATURE_NAMES)
        except FileNotFoundError:
            log.warning("no trained model in %s: every meter is scored by the baseline rules until one is "
                        "trained (`wattsup model train`)", self.model_dir)
            return None
        except ModelMismatchError as exc:
            log.error("%s; until then every meter is scored by the baseline rules", exc)
            return None

    def _publish_model_info(self) -> None:
        m = self.engine.model
        metrics.MODEL_INFO.info({"version": self.engine.model_version,
                                 "trained_rows": str(m.metadata.rows if m else 0)})

    def maybe_reload_model(self) -> bool:
        """Swap in a newer model version; a version with other features is refused and logged."""
        newest = latest_version(self.model_dir)
        if newest is None or newest == self.engine.model_version:
            return False
        try:
            model = load_model(self.model_dir, newest, expected_features=FEATURE_NAMES)
        except ModelMismatchError as exc:
            log.error("not loading model %s: %s", newest, exc)
            return False
        self.engine.model = model
        metrics.MODEL_RELOADS.inc()
        self._publish_model_info()
        log.info("hot-reloaded detector model %s", newest)
        return True

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    # -- tables --------------------------------------------------------------------------
    def attach_tables(self, state_table: Any, forecast_table: Any) -> None:
        self.state_table = state_table
        self.forecast_table = forecast_table

    @property
    def meters_tracked(self) -> int:
        return len(self.engine.store)

    @property
    def forecasts_tracked(self) -> int:
        return len(self.forecasts)

    def _ensure_loaded(self, feeder: str) -> None:
        if self.state_table is None:
            return
        blob = self.state_table.get(f"{feeder}|fast".encode())
        if blob is None or blob is self._written.get(feeder):
            return
        header, fast = _unpack(blob)
        meters: list[str] = header["meters"]
        store = self.engine.store
        arrays = {name: fast[name] for name in _FAST_FIELDS}
        arrays["how"] = np.zeros((len(meters), HOW_SLOTS, 3), dtype=np.float32)
        arrays["hod"] = np.zeros((len(meters), HOD_SLOTS, 3), dtype=np.float32)
        for kind, slots in (("h", HOW_SLOTS), ("d", HOD_SLOTS)):
            target = arrays["how" if kind == "h" else "hod"]
            for slot in range(slots):
                slot_blob = self.state_table.get(f"{feeder}|{kind}{slot}".encode())
                if slot_blob is not None:
                    _, data = _unpack(slot_blob)
                    values = data["v"]
                    target[: len(values), slot] = values[: len(meters)]
        store.import_rows(meters, arrays)
        self.feeder_meters[feeder] = list(meters)
        self._members[feeder] = set(meters)
        self._feeder_rows.pop(feeder, None)
        self._written[feeder] = blob
        if self.emitted_since is not None:
            since = int(header.get("persisted_at", 0)) - EMITTED_MARGIN_MS
            self._already_emitted[feeder] = self.emitted_since(feeder, since)
        self._load_forecasts(feeder)

    def persist(self, touched: dict[str, tuple[set[int], set[int]]]) -> None:
        """Write each touched feeder's fast state and the baseline slots the batch changed."""
        if self.state_table is None:
            return
        store = self.engine.store
        for feeder, (how_slots, hod_slots) in touched.items():
            meters = self.feeder_meters[feeder]
            rows = self._feeder_rows.get(feeder)
            if rows is None or len(rows) != len(meters):  # store rows never move; members only grow
                rows = self._feeder_rows[feeder] = store.rows_for(meters)
            fast = {name: getattr(store, name)[rows] for name in _FAST_FIELDS}
            blob = _pack({"meters": meters, "persisted_at": int(time.time() * 1000)}, fast)
            self.state_table[f"{feeder}|fast".encode()] = blob
            self._written[feeder] = blob
            for slot in how_slots:
                self.state_table[f"{feeder}|h{slot}".encode()] = _pack({}, {"v": store.how[rows, slot]})
            for slot in hod_slots:
                self.state_table[f"{feeder}|d{slot}".encode()] = _pack({}, {"v": store.hod[rows, slot]})

    # -- forecasts -----------------------------------------------------------------------
    def accept_forecasts(self, values: list[bytes], serde: Any) -> None:
        """Keep the latest forecast per meter; persist per feeder in the forecasts table."""
        changed: set[str] = set()
        for value in values:
            try:
                name, fc = serde.decode(value, raw_timestamps=True)
            except SerdeError as exc:
                log.warning("skipping undecodable forecast: %s", exc)
                continue
            if name != FORECAST or not fc["horizon"]:
                continue
            self._set_forecast(fc)
            self._forecast_blobs.setdefault(fc["feeder_id"], {})[fc["meter_id"]] = value
            changed.add(fc["feeder_id"])
        if self.forecast_table is None:
            return
        for feeder in changed:
            payload = {m: blob.hex() for m, blob in self._forecast_blobs[feeder].items()}
            self.forecast_table[f"{feeder}|forecasts".encode()] = json.dumps(payload).encode()

    def _set_forecast(self, fc: dict[str, Any]) -> None:
        horizon = fc["horizon"]
        self.forecasts[fc["meter_id"]] = MeterForecast(
            start_ms=int(horizon[0]["timestamp"]), step_ms=int(fc["interval_seconds"]) * 1000,
            expected=np.array([p["expected"] for p in horizon]), lower=np.array([p["lower"] for p in horizon]),
            upper=np.array([p["upper"] for p in horizon]), model_version=fc["model_version"],
        )

    def _load_forecasts(self, feeder: str) -> None:
        if self.forecast_table is None:
            return
        blob = self.forecast_table.get(f"{feeder}|forecasts".encode())
        if blob is None:
            return
        for meter, hex_value in json.loads(blob).items():
            if meter not in self.forecasts:
                value = bytes.fromhex(hex_value)
                try:
                    _, fc = self.serde.decode(value, raw_timestamps=True)
                except SerdeError:
                    continue
                self._set_forecast(fc)
                self._forecast_blobs.setdefault(feeder, {})[meter] = value

    def _forecast_columns(self, meters: list[str], ts: np.ndarray) -> tuple[np.ndarray, ...] | tuple[None, None, None]:
        if not self.forecasts:
            return None, None, None
        n = len(meters)
        expected, lower, upper = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        forecasts = self.forecasts
        for i, meter in enumerate(meters):
            fc = forecasts.get(meter)
            if fc is not None:
                point = fc.at(int(ts[i]))
                if point is not None:
                    expected[i], lower[i], upper[i] = point
        return expected, lower, upper

    # -- scoring -------------------------------------------------------------------------
    def process(self, columns: ReadingColumns) -> StreamResult:
        ts, kwh, interval = columns.arrays()
        feeders_in_batch = dict.fromkeys(columns.feeder_ids)
        for feeder in feeders_in_batch:
            self._ensure_loaded(feeder)
        # a meter's first reading makes it a member of its feeder's persisted state
        for meter, feeder in zip(columns.meter_ids, columns.feeder_ids):
            members = self._members.get(feeder)
            if members is None:
                members = self._members[feeder] = set(self.feeder_meters.setdefault(feeder, []))
            if meter not in members:
                members.add(meter)
                self.feeder_meters[feeder].append(meter)
        expected, lower, upper = self._forecast_columns(columns.meter_ids, ts)
        result = self.engine.score(columns.meter_ids, columns.feeder_ids, ts, kwh, interval, expected, lower, upper)
        how, hod, _, _ = _slots(ts, interval)
        touched: dict[str, tuple[set[int], set[int]]] = {f: (set(), set()) for f in feeders_in_batch}
        latest: dict[str, int] = dict.fromkeys(feeders_in_batch, 0)
        for feeder, h, d, t in zip(columns.feeder_ids, how.tolist(), hod.tolist(), columns.timestamps_ms):
            slots = touched[feeder]
            slots[0].add(h)
            slots[1].add(d)
            if t > latest[feeder]:
                latest[feeder] = t
        anomalies = result.anomalies
        if self._already_emitted and anomalies:
            before = self._already_emitted
            kept = [a for a in anomalies if (a["meter_id"], a["timestamp"]) not in before.get(a["feeder_id"], ())]
            metrics.ANOMALIES_ALREADY_EMITTED.inc(len(anomalies) - len(kept))
            anomalies = kept
        return StreamResult(anomalies=anomalies, scored=result.scored, duplicates=result.duplicates,
                            touched_feeders=touched, feeder_latest_ms=latest)
