"""One micro-batch of readings through the detection engine, as the Faust worker runs it.

:class:`StreamScorer` joins what the stream adds around :class:`~detection.engine.DetectionEngine`:
feeders' state from the changelog tables (:mod:`stream_processors.feeder_state`), the latest
forecasts (:mod:`stream_processors.forecast_cache`), the newest model (:mod:`models.reload`),
and anomalies a crashed predecessor already emitted (:mod:`stream_processors.emitted_anomalies`).
It knows nothing of Faust itself, so it is tested without a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detection.calendar import UTC_CALENDAR, FleetCalendar
from detection.engine import DetectionEngine
from detection.meter_state import MeterStateStore
from detection.readings import ReadingBatch
from detection.thresholds import Thresholds
from models.reload import ModelReloader
from readings.columns import ReadingColumns
from stream_processors import metrics
from stream_processors.feeder_state import FeederState
from stream_processors.forecast_cache import ForecastCache
from stream_processors.incidents import StreamIncidents

log = logging.getLogger(__name__)

EMITTED_MARGIN_MS = 60_000
"""Anomalies read back from this long before a recovered state was written (clock skew between hosts)."""


@dataclass
class StreamResult:
    anomalies: list[dict[str, Any]]
    """Every anomaly to publish; those operator feedback suppressed carry ``suppressed_by``."""
    scored: int
    duplicates: int
    touched_feeders: dict[str, tuple[set[int], set[int]]] = field(default_factory=dict)
    """feeder -> (hour-of-week slots, hour-of-day slots) the batch changed."""
    feeder_latest_ms: dict[str, int] = field(default_factory=dict)
    """Newest reading timestamp per feeder in the batch (event time)."""
    late: int = 0
    """Readings older than their meter's newest one, not seen before: scored without moving the state."""
    stale: int = 0
    """Readings older than every timestamp their meter remembers: counted, not scored."""
    late_example: tuple[str, int] | None = None
    """(meter id, timestamp ms) of the batch's first late reading, for the log."""
    stale_example: tuple[str, int] | None = None
    incidents: list[dict[str, Any]] = field(default_factory=list)
    """Incident records to publish (opened, updated, escalated, closed)."""


class StreamScorer:
    """Scores micro-batches of decoded readings against state kept per feeder."""

    def __init__(self, model_dir: Path, serde: Any, *, sensitivity: Callable[[str], float] | None = None,
                 thresholds: Thresholds | None = None, calendar: FleetCalendar = UTC_CALENDAR,
                 emitted_since: Callable[[str, int], set[tuple[str, int]]] | None = None,
                 incidents: StreamIncidents | None = None) -> None:
        """``emitted_since(feeder, since_ms)`` reads back anomalies already on the topic; without
        it a recovered worker may repeat anomalies a crashed one emitted just before it died.
        ``incidents`` groups the anomalies into incidents and applies operator feedback (a
        :class:`StreamIncidents` without read-back when not given)."""
        self.models = ModelReloader(model_dir)
        self.engine = DetectionEngine(self.models.model, MeterStateStore(), sensitivity=sensitivity,
                                      thresholds=thresholds, calendar=calendar)
        self.feeders = FeederState(self.engine.store)
        self.forecasts = ForecastCache(serde)
        self.emitted_since = emitted_since
        self.incidents = incidents or StreamIncidents()
        self.feeders.incidents = self.incidents
        self._already_emitted: dict[str, set[tuple[str, int]]] = {}
        """feeder -> (meter, timestamp) of anomalies a predecessor emitted after its last state write."""
        self._pending_take_over: dict[str, int] = {}
        """feeder -> since (ms) of feeders whose state was loaded but whose take-over is not finished."""
        self._publish_model_info()

    # -- model ---------------------------------------------------------------------------
    def _publish_model_info(self) -> None:
        m = self.engine.model
        metrics.MODEL_INFO.info({"version": self.engine.model_version,
                                 "trained_rows": str(m.metadata.rows if m else 0)})

    def maybe_reload_model(self) -> bool:
        """Swap in a newer model version, if there is one this code can score."""
        if not self.models.reload_if_newer():
            return False
        self.engine.model = self.models.model
        metrics.MODEL_RELOADS.inc()
        self._publish_model_info()
        return True

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    # -- tables --------------------------------------------------------------------------
    def attach_tables(self, state_table: Any, forecast_table: Any) -> None:
        self.feeders.table = state_table
        self.forecasts.table = forecast_table

    @property
    def meters_tracked(self) -> int:
        return len(self.engine.store)

    @property
    def forecasts_tracked(self) -> int:
        return len(self.forecasts)

    @property
    def feeders_tracked(self) -> int:
        return len(self.feeders.members)

    def keep_only(self, owns: Callable[[str], bool]) -> list[str]:
        """Forget every feeder ``owns`` rejects (its partition went to another worker in a rebalance):
        its meters' state, forecasts, incidents and take-over notes. Returns the feeders forgotten.
        Should the partition come back, the worker reads their state back from the changelog
        (:mod:`stream_processors.changelog_recovery`)."""
        lost = [f for f in dict.fromkeys([*self.feeders.members, *self.forecasts.feeders()]) if not owns(f)]
        self.feeders.drop(lost)
        self.forecasts.drop_feeders(lost)
        for feeder in lost:
            self._already_emitted.pop(feeder, None)
            self._pending_take_over.pop(feeder, None)
        return lost

    def accept_forecasts(self, values: list[bytes]) -> None:
        self.forecasts.accept(values)

    def persist(self, touched: dict[str, tuple[set[int], set[int]]]) -> None:
        self.feeders.persist(touched)

    def _take_over(self, feeders: Iterable[str]) -> None:
        """Load the state, forecasts and recently emitted anomalies of each feeder another worker (or
        a previous life of this one) wrote last.

        Reading the emitted anomalies back needs the broker, and a forecast may need the schema
        registry: either may be away (:class:`~stream_processors.emitted_anomalies.ReadBackUnavailable`,
        ``RegistryUnavailableError``). A feeder stays pending until both are done, so the caller can
        try the same batch again later and no take-over is half done.
        """
        for feeder in feeders:
            header = self.feeders.load(feeder)
            if header is not None:
                self._pending_take_over[feeder] = int(header.get("persisted_at", 0)) - EMITTED_MARGIN_MS
        for feeder, since in list(self._pending_take_over.items()):
            if self.emitted_since is not None:
                self._already_emitted[feeder] = self.emitted_since(feeder, since)
            self.incidents.read_back(feeder, since)
            self.forecasts.load_feeder(feeder)
            del self._pending_take_over[feeder]

    # -- scoring -------------------------------------------------------------------------
    def process(self, columns: ReadingColumns) -> StreamResult:
        ts, kwh, interval = columns.arrays()
        feeders_in_batch = dict.fromkeys(columns.feeder_ids)
        self._take_over(feeders_in_batch)
        self.feeders.join(columns.meter_ids, columns.feeder_ids)
        expected, lower, upper = self.forecasts.columns(columns.meter_ids, ts)
        result = self.engine.score(ReadingBatch(columns.meter_ids, columns.feeder_ids, ts, kwh, interval,
                                                expected, lower, upper))
        touched, latest = _touched_by_feeder(list(feeders_in_batch), columns.feeder_ids, ts,
                                             result.features.slots)  # the slots the engine just wrote
        anomalies = result.anomalies
        # feedback first: suppressed anomalies form no incident unless their event outgrows the mark;
        # every anomaly, emitted before or not, advances the incidents (their records have their own
        # already-emitted filter)
        self.incidents.judge(anomalies)
        incidents = self.incidents.observe(columns.meter_ids, columns.feeder_ids, columns.timestamps_ms,
                                           columns.interval_s, result.features.scored, anomalies, latest)
        if self._already_emitted and anomalies:
            before = self._already_emitted
            kept = [a for a in anomalies if (a["meter_id"], a["timestamp"]) not in before.get(a["feeder_id"], ())]
            metrics.ANOMALIES_ALREADY_EMITTED.inc(len(anomalies) - len(kept))
            anomalies = kept
        late, stale = result.features.late, result.features.stale
        return StreamResult(anomalies=anomalies, scored=result.scored, duplicates=result.duplicates,
                            touched_feeders=touched, feeder_latest_ms=latest,
                            late=int(late.sum()), stale=int(stale.sum()),
                            late_example=_first(late, columns), stale_example=_first(stale, columns),
                            incidents=incidents)


def _touched_by_feeder(feeders: list[str], feeder_ids: list[str], ts: np.ndarray,
                       slots: Any) -> tuple[dict[str, tuple[set[int], set[int]]], dict[str, int]]:
    """(hour-of-week and hour-of-day slots, newest timestamp) per feeder of a batch, with array
    operations: a batch of single readings has as many feeders as readings."""
    code = {f: i for i, f in enumerate(feeders)}
    codes = np.fromiter((code[f] for f in feeder_ids), dtype=np.int64, count=len(feeder_ids))
    touched: dict[str, tuple[set[int], set[int]]] = {f: (set(), set()) for f in feeders}
    for kind, slot in enumerate((slots.hour_of_week, slots.hour_of_day)):
        width = int(slot.max()) + 1 if len(slot) else 1
        for pair in np.unique(codes * width + slot).tolist():
            touched[feeders[pair // width]][kind].add(pair % width)
    newest = np.zeros(len(feeders), dtype=np.int64)
    np.maximum.at(newest, codes, ts)
    return touched, dict(zip(feeders, newest.tolist()))


def _first(mask: Any, columns: ReadingColumns) -> tuple[str, int] | None:
    """(meter id, timestamp) of the first reading ``mask`` selects, or None."""
    if not mask.any():
        return None
    i = int(mask.argmax())
    return columns.meter_ids[i], columns.timestamps_ms[i]
