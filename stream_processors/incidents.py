"""Incidents and operator feedback in the stream worker, beside the scoring of each micro-batch.

:class:`StreamIncidents` wraps the pure :class:`~detection.incidents.IncidentTracker` and
:class:`~detection.feedback.FeedbackPolicy` with what the stream adds, so the worker's own modules
change by a few lines (another reason: the per-message path is reworked for throughput elsewhere):

* **feedback, live:** :meth:`StreamIncidents.on_mark` is the feedback follower's callback
  (:class:`feedback.topic.FeedbackFollower`, a thread reading the whole compacted topic): a mark is
  applied to the policy at once; a mark that closes an incident is queued and done in the next batch
  of the incident's feeder, whose meter state is written with it;
* **suppression:** :meth:`judge` sets each anomaly's ``suppressed_by``; suppressed anomalies are
  still published and form no incident, unless their event outgrows what the operator dismissed
  (the tracker then clears it, see :mod:`detection.incidents`); :meth:`observe` counts those that
  stay suppressed (``wattsup_stream_anomalies_suppressed_total``);
* **incidents with the meter state:** the open incidents of a feeder are written in the feeder's
  ``fast`` record (:mod:`stream_processors.feeder_state`), the record that says which readings were
  seen, so a recovered or rebalanced worker continues exactly the incidents of the state it loads:
  the same readings scored again open the same ids (they are derived from the readings);
* **no record twice:** like anomalies, incident records are durable before that state is written;
  after a take-over the records emitted to the feeder's partition since the state was written are
  read back (:class:`EmittedIncidents`), and a record whose revision is not above what was already
  emitted for its incident is not emitted again (revisions follow the incident's readings, not the
  batches, see :data:`detection.incidents.Incident.revision`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from detection.feedback import FeedbackMark, FeedbackPolicy
from detection.incidents import IncidentTracker
from schemas.serde import INCIDENT
from stream_processors import metrics
from stream_processors.emitted_anomalies import EmittedAnomalies

log = logging.getLogger(__name__)

PENDING_CLOSE_SECONDS = 24 * 3600.0
"""How long an operator's close waits for its incident's feeder to send a batch to this worker. The
follower hands every worker every mark, and only the owner of the feeder has the incident: the other
workers drop the request after this long (a day: a feeder silent for longer is an outage of its own)."""


class EmittedIncidents(EmittedAnomalies):
    """Reads back the incident records emitted to a feeder's partition: feeder -> incident -> highest revision."""

    def collect(self, name: str, record: dict[str, Any], found: dict[str, Any]) -> None:
        if name == INCIDENT:
            revisions = found.setdefault(record["feeder_id"], {})
            revisions[record["incident_id"]] = max(revisions.get(record["incident_id"], -1), int(record["revision"]))

    def since(self, feeder: str, since_ms: int) -> dict[str, int]:
        return dict(super().since(feeder, since_ms) or {})


class StreamIncidents:
    """The worker's incidents and feedback: tracker, policy, pending closes, already-emitted revisions."""

    def __init__(self, emitted_since: Callable[[str, int], dict[str, int]] | None = None) -> None:
        self.tracker = IncidentTracker()
        self.policy = FeedbackPolicy()
        self.emitted_since = emitted_since
        self._already_emitted: dict[str, int] = {}
        """incident id -> highest revision a predecessor emitted after its last state write."""
        self._pending_close: dict[str, float] = {}
        """incident id -> when (monotonic) an operator asked to close it."""
        self._lock = threading.Lock()

    # -- feedback (the follower's thread) -------------------------------------------------------
    def on_mark(self, key: str, mark: FeedbackMark | None) -> None:
        with self._lock:
            if mark is None:
                self.policy.remove(key)
            else:
                self.policy.apply(mark)
                if mark.incident_id and mark.close_incident and not mark.revoked:
                    self._pending_close[mark.incident_id] = time.monotonic()
        metrics.FEEDBACK_MARKS.inc()

    # -- take-over ------------------------------------------------------------------------------
    def export_feeder(self, feeder: str) -> list[dict[str, Any]]:
        return self.tracker.export_feeder(feeder)

    def import_feeder(self, feeder: str, states: list[dict[str, Any]]) -> None:
        self.tracker.import_feeder(feeder, states)

    def read_back(self, feeder: str, since_ms: int) -> None:
        """Note the incident records a predecessor emitted to the feeder's partition since ``since_ms``."""
        if self.emitted_since is None:
            return
        for incident, revision in self.emitted_since(feeder, since_ms).items():
            self._already_emitted[incident] = max(self._already_emitted.get(incident, -1), revision)

    # -- per batch ------------------------------------------------------------------------------
    def judge(self, anomalies: list[dict[str, Any]]) -> None:
        """Set every anomaly's ``suppressed_by`` as the operators' marks decide."""
        with self._lock:
            for a in anomalies:
                a["suppressed_by"] = self.policy.judge(a["meter_id"], a.get("kind") or "unknown", a["severity"],
                                                       int(a["timestamp"]))

    def _tolerated(self, meter_id: str, kind: str, timestamp_ms: int, interval_s: int) -> float:
        with self._lock:
            return self.policy.tolerated_readings(meter_id, kind, timestamp_ms, interval_s)

    def observe(self, meter_ids: Sequence[str], feeder_ids: Sequence[str], timestamps_ms: Sequence[int],
                interval_s: Sequence[int], scored: Sequence[bool], anomalies: list[dict[str, Any]],
                feeder_latest_ms: dict[str, int]) -> list[dict[str, Any]]:
        """The batch's incident records: operator closes of this batch's feeders, then the readings'
        (``anomalies`` judged by :meth:`judge`; an event that outgrew its mark clears theirs)."""
        records = self._operator_closes(feeder_latest_ms)
        records += self.tracker.observe(meter_ids, feeder_ids, timestamps_ms, interval_s, scored, anomalies,
                                        self._tolerated)
        for a in anomalies:
            if a["suppressed_by"] is not None:
                metrics.ANOMALIES_SUPPRESSED.labels(kind=a.get("kind") or "unknown", reason=a["suppressed_by"]).inc()
        if self._already_emitted and records:
            kept = [r for r in records if r["revision"] > self._already_emitted.get(r["incident_id"], -1)]
            metrics.INCIDENT_RECORDS_ALREADY_EMITTED.inc(len(records) - len(kept))
            for r in kept:  # past what the predecessor emitted: revisions only grow, the entry is done with
                self._already_emitted.pop(r["incident_id"], None)
            records = kept
        for r in records:
            if r["event"] == "opened":
                metrics.INCIDENTS_OPENED.labels(kind=r["kind"]).inc()
            elif r["event"] == "closed":
                metrics.INCIDENTS_CLOSED.labels(kind=r["kind"], closed_by=r["closed_by"]).inc()
                metrics.INCIDENT_DURATION.labels(kind=r["kind"]).observe(
                    max(0.0, (r["ended"] - r["started"]) / 1000.0 + r["interval_seconds"]))
        return records

    def _operator_closes(self, feeder_latest_ms: dict[str, int]) -> list[dict[str, Any]]:
        if not self._pending_close:
            return []
        records: list[dict[str, Any]] = []
        now = time.monotonic()
        with self._lock:
            for incident, asked in list(self._pending_close.items()):
                open_incident = self.tracker.find(incident)
                if open_incident is None:
                    if now - asked > PENDING_CLOSE_SECONDS:
                        del self._pending_close[incident]
                    continue
                latest = feeder_latest_ms.get(open_incident.feeder_id)
                if latest is None:
                    continue  # closed with its feeder's next batch here, so the close is persisted with it
                records += self.tracker.close(incident, latest)
                del self._pending_close[incident]
        return records

    @property
    def open_count(self) -> int:
        return len(self.tracker)
