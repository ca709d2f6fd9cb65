"""Everything the dashboard reads from and writes to its database, in one place.

Ingest writes rows and the consumer offsets they came from in **one transaction**
(:func:`store_batch`), with ``INSERT ... ON CONFLICT DO NOTHING`` so a re-delivered record is
never stored twice. The read side builds the API's answers with parameterised SQLAlchemy
queries only (no user input is ever formatted into SQL).

"Last 24 h" and "last hour" are measured back from the newest data the service holds, not the
wall clock: the demo simulator runs faster than real time, and a replayed history should look
the same as a live one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dashboard.models import Anomaly, ConsumerOffset, Forecast, Incident, IncidentEvent, Meter, Reading
from dashboard.timeutil import DAY_MS, HOUR_MS, iso, now_ms

SEVERITIES = ("INFO", "WARNING", "CRITICAL")


def _insert(session: Session, model: Any) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (SQLite and PostgreSQL both do)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise RuntimeError(f"unsupported database {name}: use SQLite or PostgreSQL")


# -- ingest ------------------------------------------------------------------------------
@dataclass
class IngestBatch:
    """Decoded records of one consumer poll and the offsets that follow them."""

    anomalies: list[dict[str, Any]] = field(default_factory=list)
    readings: list[dict[str, Any]] = field(default_factory=list)
    forecasts: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    """Incident table rows (:func:`incident_row`)."""
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) -> next offset to read."""


@dataclass
class StoredBatch:
    """What :func:`store_batch` actually inserted (re-deliveries excluded)."""

    anomalies: list[dict[str, Any]] = field(default_factory=list)
    """Anomaly objects as the API shows them, with their new ids."""
    readings: list[dict[str, Any]] = field(default_factory=list)
    """Stored readings: meter_id, feeder_id, timestamp_ms, kwh."""
    forecasts: int = 0
    incidents: int = 0
    """Incident records applied (a newer revision than the stored one)."""
    incident_events: list[dict[str, Any]] = field(default_factory=list)
    """What alerts may fire on: an incident's opening, escalation and closing, each an Incident object with
    ``alert_event`` (``opened``, ``escalated:<severity>``, ``closed``) and ``event_id`` (its
    :class:`~dashboard.models.IncidentEvent` row), once each whatever the re-deliveries."""


def _anomaly_row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "meter_id": record["meter_id"], "feeder_id": record["feeder_id"], "timestamp_ms": int(record["timestamp"]),
        "observed": record["observed"], "expected": record.get("expected"), "lower": record.get("lower"),
        "upper": record.get("upper"), "residual": record.get("residual"),
        "band_residual": record.get("band_residual"), "baseline": record.get("baseline"), "score": record["score"],
        "severity": record["severity"], "kind": record.get("kind"), "causes": list(record.get("causes") or []),
        "model_version": record["model_version"], "detected_at_ms": int(record["detected_at"]),
        "suppressed_by": record.get("suppressed_by"),
    }


INCIDENT_COLUMNS = ("incident_id", "meter_id", "feeder_id", "kind", "status", "event", "started_ms", "last_seen_ms",
                    "ended_ms", "closed_by", "interval_seconds", "peak_severity", "readings", "energy_delta_kwh",
                    "worst_timestamp_ms", "worst_score", "causes", "revision", "updated_ms")


def incident_row(record: dict[str, Any]) -> dict[str, Any]:
    """A table row of an ``Incident`` Avro record (timestamps as ms)."""
    return {
        "incident_id": record["incident_id"], "meter_id": record["meter_id"], "feeder_id": record["feeder_id"],
        "kind": record["kind"], "status": record["status"], "event": record["event"],
        "started_ms": int(record["started"]), "last_seen_ms": int(record["last_seen"]),
        "ended_ms": None if record.get("ended") is None else int(record["ended"]), "closed_by": record.get("closed_by"),
        "interval_seconds": int(record["interval_seconds"]), "peak_severity": record["peak_severity"],
        "readings": int(record["readings"]), "energy_delta_kwh": float(record["energy_delta_kwh"]),
        "worst_timestamp_ms": int(record["worst_timestamp"]), "worst_score": float(record["worst_score"]),
        "causes": list(record.get("causes") or []), "revision": int(record["revision"]), "updated_ms": int(record["updated"]),
    }


def _dedupe(rows: list[dict[str, Any]], key: tuple[str, ...]) -> list[dict[str, Any]]:
    """Keep the first row per key: one multi-row INSERT must not conflict with itself on PostgreSQL."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for row in rows:
        k = tuple(row[c] for c in key)
        if k not in seen:
            seen.add(k)
            out.append(row)
    return out


def store_batch(session: Session, batch: IngestBatch) -> StoredBatch:
    """Insert the batch's rows and advance the offsets, all in the caller's transaction."""
    stored = StoredBatch()
    # Core executemany ("insertmanyvalues"): one compiled statement for the whole list. Building a
    # multi-row VALUES clause per batch instead costs SQLAlchemy ~0.4 ms per row just to compile.
    connection = session.connection()
    if batch.anomalies:
        rows = _dedupe([_anomaly_row(a) for a in batch.anomalies], ("meter_id", "timestamp_ms"))
        stmt = (_insert(session, Anomaly.__table__).on_conflict_do_nothing(index_elements=["meter_id", "timestamp_ms"])
                .returning(*Anomaly.__table__.c))
        stored.anomalies = [anomaly_json(r) for r in connection.execute(stmt, rows).mappings()]
    if batch.readings:
        rows = _dedupe(batch.readings, ("meter_id", "timestamp_ms"))
        table = Reading.__table__
        stmt = (_insert(session, table).on_conflict_do_nothing(index_elements=["meter_id", "timestamp_ms"])
                .returning(table.c.meter_id, table.c.feeder_id, table.c.timestamp_ms, table.c.kwh))
        stored.readings = [dict(r) for r in connection.execute(stmt, rows).mappings()]
        _update_meters(session, stored.readings)
    if batch.forecasts:
        newest: dict[str, dict[str, Any]] = {}
        for f in batch.forecasts:
            if f["meter_id"] not in newest or f["generated_at_ms"] >= newest[f["meter_id"]]["generated_at_ms"]:
                newest[f["meter_id"]] = f
        table = Forecast.__table__
        stmt = _insert(session, table)
        stmt = stmt.on_conflict_do_update(  # a late, older forecast never replaces a newer one
            index_elements=["meter_id"],
            set_={c: stmt.excluded[c] for c in ("feeder_id", "generated_at_ms", "model_version",
                                                "interval_seconds", "points")},
            where=table.c.generated_at_ms <= stmt.excluded.generated_at_ms,
        )
        connection.execute(stmt, list(newest.values()))
        stored.forecasts = len(newest)
    if batch.incidents:
        newest_incident: dict[str, dict[str, Any]] = {}
        for r in batch.incidents:
            if r["revision"] > newest_incident.get(r["incident_id"], {"revision": -1})["revision"]:
                newest_incident[r["incident_id"]] = r
        table = Incident.__table__
        before = {r.incident_id: r for r in session.execute(
            select(Incident.incident_id, Incident.status, Incident.peak_severity, Incident.revision)
            .where(Incident.incident_id.in_(list(newest_incident))))}
        events = [e for ident in sorted(newest_incident) for e in _transitions(before.get(ident), newest_incident[ident])]
        stmt = _insert(session, table)
        stmt = stmt.on_conflict_do_update(  # a re-delivered, older revision never replaces a newer one
            index_elements=["incident_id"],
            set_={c: stmt.excluded[c] for c in INCIDENT_COLUMNS if c != "incident_id"},
            where=table.c.revision < stmt.excluded.revision,
        )
        connection.execute(stmt, [newest_incident[k] for k in sorted(newest_incident)])
        stored.incidents = len(newest_incident)
        stored.incident_events = _record_events(session, events)
    if batch.offsets:
        rows = [{"topic": t, "partition": p, "next_offset": o} for (t, p), o in sorted(batch.offsets.items())]
        stmt = _insert(session, ConsumerOffset).values(rows)
        # Never backwards: a replica that lost a partition to another (its session expired mid-batch) may still
        # commit a batch the new owner is past; its rows are re-deliveries (unique keys), its offset must not win.
        stmt = stmt.on_conflict_do_update(
            index_elements=["topic", "partition"],
            set_={"next_offset": _greater(session)(ConsumerOffset.next_offset, stmt.excluded.next_offset)})
        session.execute(stmt)
    return stored


def _transitions(before: Any, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The alertable changes from the stored state of an incident (None: never seen) to a newer record."""
    if before is not None and before.revision >= row["revision"]:
        return []
    events = []
    if before is None:
        events.append("opened")
    elif SEVERITIES.index(row["peak_severity"]) > SEVERITIES.index(before.peak_severity):
        events.append(f"escalated:{row['peak_severity']}")
    if row["status"] == "closed" and (before is None or before.status != "closed"):
        events.append("closed")
    out = []
    for event in events:
        payload = incident_json(SimpleNamespace(**row))
        payload["alert_event"] = event
        out.append(payload)
    return out


def _record_events(session: Session, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Record the incident events (in the caller's transaction) and return those recorded now, each with its
    ``event_id``: an event another replica recorded first is its to alert on."""
    if not events:
        return []
    stored_at = now_ms()
    stmt = (_insert(session, IncidentEvent.__table__)
            .on_conflict_do_nothing(index_elements=["incident_id", "event"])
            .returning(IncidentEvent.id, IncidentEvent.incident_id, IncidentEvent.event))
    rows = [{"incident_id": e["incident_id"], "event": e["alert_event"], "revision": e["revision"],
             "stored_at_ms": stored_at} for e in events]
    recorded = {(r.incident_id, r.event): r.id for r in session.connection().execute(stmt, rows)}
    out = []
    for e in events:
        event_id = recorded.get((e["incident_id"], e["alert_event"]))
        if event_id is not None:
            out.append({**e, "event_id": event_id})
    return out


def incident_events_json(session: Session, *conditions: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """Recorded incident events matching ``conditions`` in id order, each as the alert rules see it: the
    incident as it is now, with ``alert_event`` and ``event_id``."""
    rows = session.execute(select(IncidentEvent, Incident)
                           .join(Incident, Incident.incident_id == IncidentEvent.incident_id)
                           .where(*conditions).order_by(IncidentEvent.id).limit(limit))
    return [{**incident_json(incident), "alert_event": event.event, "event_id": event.id} for event, incident in rows]


def _greater(session: Session) -> Any:
    """SQL's larger-of-two: SQLite's two-argument max(), PostgreSQL's greatest()."""
    return func.max if session.get_bind().dialect.name == "sqlite" else func.greatest


def _update_meters(session: Session, readings: list[dict[str, Any]]) -> None:
    latest: dict[str, tuple[str, int]] = {}
    for r in readings:
        prev = latest.get(r["meter_id"])
        if prev is None or r["timestamp_ms"] > prev[1]:
            latest[r["meter_id"]] = (r["feeder_id"], r["timestamp_ms"])
    if not latest:
        return
    # In key order: replicas upserting overlapping meters (a meter that changed feeder) lock rows in one order.
    rows = [{"meter_id": m, "feeder_id": f, "last_reading_ms": t} for m, (f, t) in sorted(latest.items())]
    table = Meter.__table__
    stmt = _insert(session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["meter_id"],
        set_={"feeder_id": stmt.excluded.feeder_id,
              "last_reading_ms": _greater(session)(table.c.last_reading_ms, stmt.excluded.last_reading_ms)},
    )
    session.connection().execute(stmt, rows)


def stored_offsets(session: Session, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    rows = session.execute(select(ConsumerOffset).where(ConsumerOffset.topic.in_(list(topics)))).scalars()
    return {(r.topic, r.partition): r.next_offset for r in rows}


def prune_readings(session: Session, retention_ms: int, now: int | None = None) -> int:
    """Delete readings older than ``retention_ms`` before the wall clock ``now`` (default: the current time).

    When every stored reading is older than that (a replayed or back-filled history), the window
    ends at the newest reading instead, so a replay keeps its last ``retention_ms`` to look at.
    The cutoff is never later than the wall clock's: a reading stamped in the future (a meter with
    a wrong clock) cannot move it, so one bad reading can never delete stored data.
    """
    now = now_ms() if now is None else now
    newest = session.scalar(select(func.max(Reading.timestamp_ms)))
    if newest is None:
        return 0
    result = session.execute(delete(Reading).where(Reading.timestamp_ms < min(now, newest) - retention_ms))
    return int(result.rowcount or 0)


# -- read side ---------------------------------------------------------------------------
def anomaly_json(row: Any) -> dict[str, Any]:
    """The API's Anomaly object from an ORM row or a result mapping."""
    get = row.__getitem__ if isinstance(row, dict) or hasattr(row, "keys") else lambda k: getattr(row, k)
    return {
        "id": get("id"), "meter_id": get("meter_id"), "feeder_id": get("feeder_id"),
        "timestamp": iso(get("timestamp_ms")), "observed": get("observed"), "expected": get("expected"),
        "lower": get("lower"), "upper": get("upper"), "residual": get("residual"),
        "band_residual": get("band_residual"), "baseline": get("baseline"), "score": get("score"),
        "severity": get("severity"), "kind": get("kind"), "causes": get("causes") or [],
        "model_version": get("model_version"), "detected_at": iso(get("detected_at_ms")),
        "suppressed_by": get("suppressed_by"),
    }


@dataclass
class AnomalyFilter:
    meter_id: str | None = None
    feeder_id: str | None = None
    severities: Sequence[str] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    include_suppressed: bool = False
    """Suppressed anomalies (operator feedback) are left out unless asked for."""

    def apply(self, query: Select[Any]) -> Select[Any]:
        if not self.include_suppressed:
            query = query.where(Anomaly.suppressed_by.is_(None))
        if self.meter_id:
            query = query.where(Anomaly.meter_id == self.meter_id)
        if self.feeder_id:
            query = query.where(Anomaly.feeder_id == self.feeder_id)
        if self.severities:
            query = query.where(Anomaly.severity.in_(list(self.severities)))
        if self.since_ms is not None:
            query = query.where(Anomaly.timestamp_ms >= self.since_ms)
        if self.until_ms is not None:
            query = query.where(Anomaly.timestamp_ms <= self.until_ms)
        return query


def list_anomalies(session: Session, flt: AnomalyFilter, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of anomalies, newest first (timestamp, then id), and how many match in all."""
    total = session.scalar(flt.apply(select(func.count()).select_from(Anomaly))) or 0
    rows = session.scalars(flt.apply(select(Anomaly)).order_by(Anomaly.timestamp_ms.desc(), Anomaly.id.desc())
                           .limit(limit).offset(offset))
    return [anomaly_json(r) for r in rows], int(total)


def iter_anomalies(session: Session, flt: AnomalyFilter, chunk: int = 5000) -> Iterable[dict[str, Any]]:
    """Every matching anomaly, newest first, fetched in chunks (for the CSV download)."""
    query = flt.apply(select(Anomaly)).order_by(Anomaly.timestamp_ms.desc(), Anomaly.id.desc())
    for row in session.scalars(query.execution_options(yield_per=chunk)):
        yield anomaly_json(row)


def newest_data_ms(session: Session) -> int | None:
    """Newest timestamp the service holds (readings or anomalies): "now" in data time."""
    reading = session.scalar(select(func.max(Meter.last_reading_ms)))
    anomaly = session.scalar(select(func.max(Anomaly.timestamp_ms)))
    values = [v for v in (reading, anomaly) if v is not None]
    return max(values) if values else None


def list_meters(session: Session, feeder_id: str | None) -> list[dict[str, Any]]:
    now = newest_data_ms(session)
    counts: dict[str, int] = {}
    if now is not None:
        q = (select(Anomaly.meter_id, func.count()).where(Anomaly.timestamp_ms > now - DAY_MS)
             .group_by(Anomaly.meter_id))
        if feeder_id:
            q = q.where(Anomaly.feeder_id == feeder_id)
        counts = {m: int(n) for m, n in session.execute(q)}
    q2 = select(Meter).order_by(Meter.meter_id)
    if feeder_id:
        q2 = q2.where(Meter.feeder_id == feeder_id)
    items = [{"meter_id": m.meter_id, "feeder_id": m.feeder_id, "last_reading_at": iso(m.last_reading_ms),
              "anomalies_24h": counts.pop(m.meter_id, 0)} for m in session.scalars(q2)]
    # Meters known only from anomalies (readings pruned or not consumed) still appear.
    if counts:
        q3 = (select(Anomaly.meter_id, Anomaly.feeder_id).where(Anomaly.meter_id.in_(list(counts)))
              .group_by(Anomaly.meter_id, Anomaly.feeder_id))
        for meter, feeder in session.execute(q3):
            if meter in counts:
                items.append({"meter_id": meter, "feeder_id": feeder, "last_reading_at": None,
                              "anomalies_24h": counts.pop(meter)})
        items.sort(key=lambda i: i["meter_id"])
    return items


def summary(session: Session, model_version: str | None) -> dict[str, Any]:
    now = newest_data_ms(session)
    meters = session.scalar(select(func.count()).select_from(Meter)) or 0
    feeders = session.scalar(select(func.count(func.distinct(Meter.feeder_id)))) or 0
    by_severity = {s: 0 for s in SEVERITIES}
    readings_last_hour = 0
    latest_reading = session.scalar(select(func.max(Meter.last_reading_ms)))
    if now is not None:
        q = select(Anomaly.severity, func.count()).where(Anomaly.timestamp_ms > now - DAY_MS).group_by(Anomaly.severity)
        for severity, n in session.execute(q):
            by_severity[severity] = int(n)
        if latest_reading is not None:
            readings_last_hour = session.scalar(
                select(func.count()).select_from(Reading).where(Reading.timestamp_ms > latest_reading - HOUR_MS)) or 0
    if model_version is None:
        model_version = session.scalar(select(Anomaly.model_version).order_by(Anomaly.id.desc()).limit(1))
    return {"meters": int(meters), "feeders": int(feeders), "readings_last_hour": int(readings_last_hour),
            "anomalies_24h": by_severity, "latest_reading_at": iso(latest_reading), "model_version": model_version}


def series(session: Session, *, meter_id: str | None, feeder_id: str | None, since_ms: int | None,
           until_ms: int | None) -> dict[str, Any]:
    """Readings, forecast and anomalies of one meter, or summed readings of one feeder.

    Without a range: the last 48 h of data the service holds for that key.
    """
    if meter_id:
        key_col, key = Reading.meter_id, meter_id
    else:
        key_col, key = Reading.feeder_id, feeder_id
    explicit_until = until_ms is not None
    if until_ms is None:
        until_ms = session.scalar(select(func.max(Reading.timestamp_ms)).where(key_col == key))
        if until_ms is None:
            anomaly_col = Anomaly.meter_id if meter_id else Anomaly.feeder_id
            until_ms = session.scalar(select(func.max(Anomaly.timestamp_ms)).where(anomaly_col == key))
    if until_ms is None:
        return {"key": key, "readings": [], "forecast": [], "anomalies": []}
    if since_ms is None:  # the 48 h ending at until: (until - 48 h, until], so 48 hourly points, not 49
        since_ms = until_ms - 2 * DAY_MS + 1
    if meter_id:
        q = (select(Reading.timestamp_ms, Reading.kwh).where(Reading.meter_id == meter_id)
             .where(Reading.timestamp_ms.between(since_ms, until_ms)).order_by(Reading.timestamp_ms))
    else:
        q = (select(Reading.timestamp_ms, func.sum(Reading.kwh)).where(Reading.feeder_id == feeder_id)
             .where(Reading.timestamp_ms.between(since_ms, until_ms))
             .group_by(Reading.timestamp_ms).order_by(Reading.timestamp_ms))
    readings = [{"timestamp": iso(t), "kwh": round(float(k), 6)} for t, k in session.execute(q)]
    forecast: list[dict[str, Any]] = []
    if meter_id:
        fc = session.get(Forecast, meter_id)
        if fc is not None:
            # Without an explicit end the forecast's future part is shown too: that is its point.
            forecast = [{"timestamp": iso(int(p[0])), "expected": p[1], "lower": p[2], "upper": p[3]}
                        for p in fc.points if p[0] >= since_ms and (not explicit_until or p[0] <= until_ms)]
    anomaly_filter = AnomalyFilter(meter_id=meter_id, feeder_id=None if meter_id else feeder_id,
                                   since_ms=since_ms, until_ms=until_ms)
    anomalies = [anomaly_json(r) for r in session.scalars(
        anomaly_filter.apply(select(Anomaly)).order_by(Anomaly.timestamp_ms, Anomaly.id).limit(5000))]
    return {"key": key, "readings": readings, "forecast": forecast, "anomalies": anomalies}


# -- incidents -----------------------------------------------------------------------------
INCIDENT_STATES = ("open", "closed")
INCIDENT_KINDS = ("outage", "stuck", "spike", "high_load", "dip", "drift", "catch_up", "level_shift", "unknown")
"""Kinds of anomaly an incident can be of (detection/explain.py), plus ``unknown`` for an anomaly without one."""


def incident_json(row: Any) -> dict[str, Any]:
    """The API's Incident object from an ORM row: times as ISO strings, duration in seconds."""
    ended = row.ended_ms
    last = ended if ended is not None else row.last_seen_ms
    return {
        "incident_id": row.incident_id, "meter_id": row.meter_id, "feeder_id": row.feeder_id, "kind": row.kind,
        "status": row.status, "event": row.event, "started": iso(row.started_ms), "last_seen": iso(row.last_seen_ms),
        "ended": iso(ended) if ended is not None else None, "closed_by": row.closed_by,
        "interval_seconds": row.interval_seconds,
        "duration_seconds": (last - row.started_ms) / 1000.0 + row.interval_seconds,
        "peak_severity": row.peak_severity, "readings": row.readings, "energy_delta_kwh": row.energy_delta_kwh,
        "worst_timestamp": iso(row.worst_timestamp_ms), "worst_score": row.worst_score, "causes": row.causes or [],
        "revision": row.revision,
    }


@dataclass
class IncidentFilter:
    feeder_id: str | None = None
    meter_id: str | None = None
    kinds: Sequence[str] = ()
    state: str | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.feeder_id:
            query = query.where(Incident.feeder_id == self.feeder_id)
        if self.meter_id:
            query = query.where(Incident.meter_id == self.meter_id)
        if self.kinds:
            query = query.where(Incident.kind.in_(list(self.kinds)))
        if self.state:
            query = query.where(Incident.status == self.state)
        return query


def list_incidents(session: Session, flt: IncidentFilter, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of incidents, open ones first, then newest first; and how many match in all."""
    total = session.scalar(flt.apply(select(func.count()).select_from(Incident))) or 0
    open_first = (Incident.status == "open").desc()
    rows = session.scalars(flt.apply(select(Incident)).order_by(open_first, Incident.started_ms.desc(),
                                                                Incident.incident_id).limit(limit).offset(offset))
    return [incident_json(r) for r in rows], int(total)


def get_incident(session: Session, incident_id: str) -> Incident | None:
    return session.get(Incident, incident_id)


def incident_anomalies(session: Session, incident: Incident) -> list[dict[str, Any]]:
    """The anomalies of an incident's meter and kind from its start to its last anomaly (its red points)."""
    rows = session.scalars(select(Anomaly).where(
        Anomaly.meter_id == incident.meter_id, Anomaly.kind == incident.kind,
        Anomaly.timestamp_ms >= incident.started_ms, Anomaly.timestamp_ms <= incident.last_seen_ms,
        Anomaly.suppressed_by.is_(None)).order_by(Anomaly.timestamp_ms).limit(5000))
    return [anomaly_json(r) for r in rows]


def open_incidents_by_kind_and_severity(session: Session) -> dict[tuple[str, str], int]:
    rows = session.execute(select(Incident.kind, Incident.peak_severity, func.count())
                           .where(Incident.status == "open").group_by(Incident.kind, Incident.peak_severity))
    return {(k, s): int(n) for k, s, n in rows}
