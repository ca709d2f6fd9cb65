"""Incidents: a meter's consecutive anomalies of one kind, grouped into one event that opens, grows and closes.

An operator needs one alarm per event, not one per abnormal reading: an outage of a 15-minute
meter yields a new anomaly every interval. :class:`IncidentTracker` reads the scored readings of
each batch in time order and keeps, per meter and kind, at most one **open** incident:

* an anomaly of kind K on a meter with no open K incident **opens** one; its id is derived from
  the meter, the kind and the first reading's timestamp, so scoring the same readings again (a
  restarted worker) gives the same id;
* a later anomaly of kind K **extends** it (readings, last seen, energy, peak severity, the causes
  of its worst reading), even after up to :data:`MAX_GAP_READINGS` readings that were not;
* :data:`CLOSE_AFTER_NORMAL_READINGS` readings in a row that are not anomalies of kind K **close**
  it (``closed_by`` ``"recovered"``, ``ended`` the timestamp of the reading that closed it); an
  operator may close it at any time (``"operator"``).

**Feedback.** An anomaly an operator's mark suppresses in its scope (``suppressed_by``
``feedback_scope``) follows its event too, in a **silenced** incident that emits nothing. If that
event outgrows what the operator dismissed (:meth:`FeedbackPolicy.tolerated_readings
<detection.feedback.FeedbackPolicy.tolerated_readings>`), the incident breaks through: it opens then,
with every reading it has seen, and from that reading to its end its anomalies stand (their
``suppressed_by`` is cleared). Anomalies suppressed for another reason count as normal readings.

What is not a reading does not count either way: a meter that stops reporting leaves its open
incidents open (the feeder-silence alert covers that), and missing intervals neither close nor
extend an incident. A late reading (not newer than the last reading an incident has seen) changes
no incident: incidents move forward in time, like the meter's state. Only what an incident shows
(open, extended, escalated, closed) is emitted; a normal reading that does not close it changes
only the tracker's state, which is persisted with the meter state.

Everything is data time (reading timestamps, epoch ms), never the wall clock, so the records of an
incident are the same whoever scores the readings and whenever: a replay and the stream agree.
Nothing here knows Kafka; the stream worker keeps :meth:`IncidentTracker.export_feeder` with each
feeder's meter state and publishes the records.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

log = logging.getLogger(__name__)

SEVERITY_RANK = {"INFO": 0, "WARNING": 1, "CRITICAL": 2}

SILENCED_BY = "feedback_scope"
"""The ``suppressed_by`` that makes a silenced incident (:data:`detection.feedback.SUPPRESSED_IN_SCOPE`)."""


class Tolerance(Protocol):
    def __call__(self, meter_id: str, kind: str, timestamp_ms: int, interval_s: int) -> float: ...


def _never_outgrown(meter_id: str, kind: str, timestamp_ms: int, interval_s: int) -> float:
    return float("inf")

MAX_GAP_READINGS = 2
"""Readings that are not anomalies of an incident's kind which may fall between two of its anomalies.

Why 2, on any meter: flags sit at a per-meter threshold, and inside one lasting event a reading
regularly falls just under it (an outage whose meter reports one small catch-up value, a high load
that dips for one interval, a stuck register whose run counter restarts): splitting there would
send the operator two alarms for one event. Counted in readings, not hours, so it scales with the
meter's interval (30 minutes on a 15-minute meter, 2 days on a daily one); the event evaluation
(:mod:`detection.evaluation`) merges alarm episodes over the same two-reading gap."""

CLOSE_AFTER_NORMAL_READINGS = MAX_GAP_READINGS + 1
"""Readings in a row that are not anomalies of the incident's kind after which it is closed.

One more than the gap it may bridge, so an incident closes exactly when no later anomaly could
still extend it: closing earlier would emit a close and then a second incident for one event."""


@dataclass
class Incident:
    """One incident: the fields of the ``Incident`` Avro record, plus the tracker's own counters."""

    incident_id: str
    meter_id: str
    feeder_id: str
    kind: str
    started: int
    """Timestamp (epoch ms, the end of its interval, as for anomalies) of the incident's first anomaly."""
    last_seen: int
    """Timestamp of its latest anomaly."""
    interval_seconds: int
    peak_severity: str
    readings: int
    """Anomalous readings in the incident."""
    energy_delta_kwh: float
    """Sum over its anomalous readings of observed minus baseline: positive an excess, negative a shortfall."""
    worst_timestamp: int
    worst_score: float
    causes: list[dict[str, Any]]
    """The causes of its worst reading (highest severity, then score)."""
    ended: int | None = None
    closed_by: str | None = None
    """None while open; ``recovered`` (normal readings) or ``operator``."""
    revision: int = 0
    """Twice its readings, plus one once closed: grows with every record emitted, and the same state gives
    the same revision however the readings were cut into batches, so (incident_id, revision) names one
    record and a consumer keeps the highest revision it has seen."""
    updated: int = 0
    """Data time of the last change (the reading or operator action that made it)."""
    event: str = "opened"
    """What the latest record says happened: opened, updated, escalated, closed."""
    last_reading: int = 0
    """Timestamp of the newest reading of its meter this incident has judged (tracker state)."""
    normal_run: int = 0
    """Readings in a row since its last anomaly that were not anomalies of its kind (tracker state)."""
    silenced: bool = False
    """Its anomalies are suppressed by feedback and it has emitted nothing (tracker state)."""
    outgrown: bool = False
    """It was silenced and broke through: its later anomalies stand whatever the marks say (tracker state)."""

    @property
    def status(self) -> str:
        return "open" if self.ended is None else "closed"

    def record(self) -> dict[str, Any]:
        """The ``io.wattsup.incidents.Incident`` Avro record."""
        out = {k: getattr(self, k) for k in _RECORD_FIELDS}
        out["status"] = self.status
        out["causes"] = [dict(c) for c in self.causes]
        return out

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state, for persisting with the meter state."""
        out = {k: getattr(self, k) for k in _STATE_FIELDS}
        out["causes"] = [dict(c) for c in self.causes]
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Incident:
        return cls(**state)

    def span_readings(self, ts: int) -> float:
        """Readings from its first anomaly to ``ts``, both included."""
        return (ts - self.started) / (self.interval_seconds * 1000) + 1


_STATE_FIELDS = tuple(f.name for f in fields(Incident))
_RECORD_FIELDS = tuple(n for n in _STATE_FIELDS if n not in ("last_reading", "normal_run", "silenced", "outgrown"))
"""An incident's fields, and those its Avro record carries (the rest are the tracker's own counters). Its
fields are scalars but for ``causes``, flat dicts, which are copied: ``dataclasses.asdict``'s deep copy
of every incident, in every batch that touches its meter, was a hot spot of the stream worker's profile."""


def incident_id(meter_id: str, kind: str, started_ms: int) -> str:
    """A deterministic id: the same readings scored again give the same id (20 hex digits, URL-safe
    whatever the meter id holds)."""
    digest = hashlib.sha256(f"{meter_id}\x00{kind}\x00{started_ms}".encode()).hexdigest()
    return f"inc-{digest[:20]}"


def _worse(anomaly: dict[str, Any], incident: Incident) -> bool:
    rank, peak = SEVERITY_RANK.get(anomaly["severity"], 0), SEVERITY_RANK.get(incident.peak_severity, 0)
    return rank > peak or (rank == peak and float(anomaly["score"]) > incident.worst_score)


def _delta(anomaly: dict[str, Any]) -> float:
    baseline = anomaly.get("baseline")
    return float(anomaly["observed"]) - float(baseline) if baseline is not None else 0.0


@dataclass
class _Touched:
    incident: Incident
    opened: bool = False
    escalated: bool = False
    extended: bool = False
    closed: bool = False


@dataclass
class IncidentTracker:
    """Open incidents per meter and kind; :meth:`observe` advances them batch by batch."""

    open: dict[str, dict[str, Incident]] = field(default_factory=dict)
    """meter id -> kind -> its open incident."""
    _by_feeder: dict[str, set[str]] = field(default_factory=dict)
    """feeder -> meters with an open incident (what :meth:`export_feeder` writes)."""

    def __len__(self) -> int:
        return len(self.open_incidents())

    def open_incidents(self) -> list[Incident]:
        """The open incidents operators know of (not the silenced ones)."""
        return [inc for kinds in self.open.values() for inc in kinds.values() if not inc.silenced]

    def find(self, incident_id_: str) -> Incident | None:
        for inc in self.open_incidents():
            if inc.incident_id == incident_id_:
                return inc
        return None

    # -- scoring -------------------------------------------------------------------------------
    def observe(
        self,
        meter_ids: Sequence[str],
        feeder_ids: Sequence[str],
        timestamps_ms: Sequence[int],
        interval_s: Sequence[int],
        scored: Sequence[bool],
        anomalies: Iterable[dict[str, Any]],
        tolerated: Tolerance = _never_outgrown,
    ) -> list[dict[str, Any]]:
        """Advance the incidents by one batch of readings; returns the incident records to emit.

        ``scored`` says which readings were judged (duplicates and stale readings were not);
        ``anomalies`` are the batch's anomaly records (meter_id, timestamp, kind, severity, score,
        observed, baseline, causes). At most two records per incident and batch: its state after the
        batch (``opened``, ``escalated`` or ``updated``) and, if it ended in the batch, ``closed``.
        An anomaly suppressed in a feedback scope goes to a silenced incident, which breaks through
        (and clears ``suppressed_by`` of the anomaly that made it) once it runs longer than
        ``tolerated(meter, kind, timestamp, interval)`` readings; other suppressed anomalies are
        normal readings here.
        """
        by_reading: dict[tuple[str, int], dict[str, Any]] = {}
        for a in anomalies:
            if a.get("suppressed_by") in (None, SILENCED_BY):
                by_reading[(a["meter_id"], int(a["timestamp"]))] = a
        relevant = set(self.open) | {m for m, _ in by_reading}
        if not relevant:
            return []
        rows = [i for i, m in enumerate(meter_ids) if m in relevant and scored[i]]
        rows.sort(key=lambda i: (meter_ids[i], int(timestamps_ms[i])))
        touched: dict[str, _Touched] = {}
        for i in rows:
            meter, ts = meter_ids[i], int(timestamps_ms[i])
            anomaly = by_reading.get((meter, ts))
            kind = (anomaly.get("kind") or "unknown") if anomaly is not None else None
            silent = anomaly is not None and anomaly.get("suppressed_by") == SILENCED_BY
            for inc in list(self.open.get(meter, {}).values()):
                if ts <= inc.last_reading:
                    continue  # late: incidents move forward in time only
                inc.last_reading = ts
                if inc.kind == kind and (inc.silenced or inc.outgrown or not silent):
                    assert anomaly is not None
                    if inc.outgrown:
                        anomaly["suppressed_by"] = None
                    escalated = SEVERITY_RANK.get(anomaly["severity"], 0) > SEVERITY_RANK.get(inc.peak_severity, 0)
                    self._extend(inc, anomaly, ts)
                    if inc.silenced:
                        self._maybe_break_through(inc, anomaly, ts, tolerated, touched)
                    else:
                        t = touched.setdefault(inc.incident_id, _Touched(inc))
                        t.escalated |= escalated
                        t.extended = True
                else:  # a suppressed anomaly of an incident opened before the mark counts as normal
                    inc.normal_run += 1
                    if inc.normal_run >= CLOSE_AFTER_NORMAL_READINGS:
                        self._close(inc, ts, "recovered")
                        if not inc.silenced:
                            touched.setdefault(inc.incident_id, _Touched(inc)).closed = True
            if anomaly is not None and kind not in self.open.get(meter, {}):
                inc = self._open(meter, feeder_ids[i], kind, anomaly, ts, int(interval_s[i]))
                if silent:
                    inc.silenced = True
                    self._maybe_break_through(inc, anomaly, ts, tolerated, touched)
                else:
                    touched[inc.incident_id] = _Touched(inc, opened=True)
        return self._records(touched.values())

    @staticmethod
    def _maybe_break_through(inc: Incident, anomaly: dict[str, Any], ts: int, tolerated: Tolerance,
                             touched: dict[str, _Touched]) -> None:
        """A silenced incident that now runs longer than feedback tolerates (or whose anomaly stands: the
        scope ended mid-event) opens, with every reading it has seen; its anomaly stands."""
        if anomaly.get("suppressed_by") == SILENCED_BY and \
                inc.span_readings(ts) <= tolerated(inc.meter_id, inc.kind, ts, inc.interval_seconds):
            return
        inc.silenced, inc.outgrown = False, True
        anomaly["suppressed_by"] = None
        touched[inc.incident_id] = _Touched(inc, opened=True)

    def close(self, incident_id_: str, at_ms: int) -> list[dict[str, Any]]:
        """An operator closes an open incident (``at_ms``: data time, e.g. the newest reading seen);
        returns its closing record, or nothing if it is not open here."""
        inc = self.find(incident_id_)
        if inc is None:
            return []
        self._close(inc, max(at_ms, inc.last_seen), "operator")
        return self._records([_Touched(inc, closed=True)])

    def _open(self, meter: str, feeder: str, kind: str, anomaly: dict[str, Any], ts: int,
              interval: int) -> Incident:
        inc = Incident(
            incident_id=incident_id(meter, kind, ts), meter_id=meter, feeder_id=feeder, kind=kind,
            started=ts, last_seen=ts, interval_seconds=interval, peak_severity=anomaly["severity"], readings=1,
            energy_delta_kwh=_delta(anomaly), worst_timestamp=ts, worst_score=float(anomaly["score"]),
            causes=[dict(c) for c in anomaly.get("causes", [])], updated=ts, last_reading=ts,
        )
        self.open.setdefault(meter, {})[kind] = inc
        self._by_feeder.setdefault(feeder, set()).add(meter)
        return inc

    @staticmethod
    def _extend(inc: Incident, anomaly: dict[str, Any], ts: int) -> None:
        if _worse(anomaly, inc):
            inc.worst_timestamp, inc.worst_score = ts, float(anomaly["score"])
            inc.causes = [dict(c) for c in anomaly.get("causes", [])]
        if SEVERITY_RANK.get(anomaly["severity"], 0) > SEVERITY_RANK.get(inc.peak_severity, 0):
            inc.peak_severity = anomaly["severity"]
        inc.readings += 1
        inc.energy_delta_kwh += _delta(anomaly)
        inc.last_seen = inc.updated = ts
        inc.normal_run = 0

    def _close(self, inc: Incident, ts: int, by: str) -> None:
        inc.ended, inc.closed_by, inc.updated = ts, by, ts
        kinds = self.open.get(inc.meter_id, {})
        kinds.pop(inc.kind, None)
        if not kinds:
            self.open.pop(inc.meter_id, None)
            meters = self._by_feeder.get(inc.feeder_id)
            if meters is not None:
                meters.discard(inc.meter_id)

    @staticmethod
    def _records(touched: Iterable[_Touched]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for t in sorted(touched, key=lambda t: (t.incident.started, t.incident.incident_id)):
            inc = t.incident
            if t.opened or t.extended:
                inc.revision = 2 * inc.readings
                inc.event = "opened" if t.opened else "escalated" if t.escalated else "updated"
                snapshot = inc.record()
                if t.closed:  # the state it had before it closed in the same batch
                    snapshot.update(status="open", ended=None, closed_by=None, updated=inc.last_seen)
                out.append(snapshot)
            if t.closed:
                inc.revision = 2 * inc.readings + 1
                inc.event = "closed"
                out.append(inc.record())
        return out

    # -- persistence with the meter state ------------------------------------------------------
    def export_feeder(self, feeder: str) -> list[dict[str, Any]]:
        """The open incidents of a feeder's meters, JSON-serialisable (see :meth:`import_feeder`)."""
        return [inc.state() for m in sorted(self._by_feeder.get(feeder, ())) for inc in self.open.get(m, {}).values()]

    def import_feeder(self, feeder: str, states: list[dict[str, Any]]) -> None:
        """Replace what is known of a feeder's incidents by persisted state (a take-over)."""
        for meter in self._by_feeder.pop(feeder, set()):
            self.open.pop(meter, None)
        for state in states:
            inc = Incident.from_state(state)
            self.open.setdefault(inc.meter_id, {})[inc.kind] = inc
            self._by_feeder.setdefault(feeder, set()).add(inc.meter_id)
