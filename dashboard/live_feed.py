"""Every replica's live view shows what any replica stored: PostgreSQL LISTEN/NOTIFY between replicas.

Dashboard replicas on one PostgreSQL database share the topics' partitions, so a replica stores only
part of the new anomalies and readings, while each browser is connected to one replica. Each ingest
transaction therefore also sends a notice on :data:`CHANNEL` (:func:`notify_stored`): the ids of the
anomalies it stored and the time span and feeders of its readings. PostgreSQL delivers notices only
when the transaction commits, to every listening session, in commit order, so a notice never names a
row another replica cannot read yet, and a rolled-back batch announces nothing.

:class:`DatabaseFeed` listens in every replica (one connection of its own). A notice from another
replica is turned into live events: its anomalies are read by id and sent to every client; for
clients watching a meter or a feeder, that key's readings (or per-timestamp feeder totals) in the
notice's time span are read and sent. A replica's own notices are skipped (its ingest has already
published those events). The other replicas' anomalies and incident events (ids in ``e``) are also
checked against the alert rules here (see :class:`DatabaseFeed`). The page replaces a reading it already has (same timestamp) and ignores an
anomaly id it already has, so a reading sent twice does no harm. A notice missed while the listening
connection was down is made good after it reconnects: anomalies with a higher id than the last one
seen are sent then; the page reloads the charted series from the API anyway.

SQLite, the one-box default, runs one process and needs none of this.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from dashboard.events import EventHub
from dashboard.metrics import DashboardMetrics
from dashboard.models import Anomaly, IncidentEvent, Meter, Reading
from dashboard.store import StoredBatch, anomaly_json, incident_events_json
from dashboard.timeutil import iso
from foundation.kafka_logging import retry_wait

log = logging.getLogger(__name__)

CHANNEL = "wattsup_stored"
PAYLOAD_BYTES = 7800
"""PostgreSQL refuses a notice payload of 8000 bytes or more; a batch's anomaly ids go in as many notices as
it takes."""
FEEDERS_PER_NOTICE = 100
"""A batch's readings name their feeders up to this many (a listener reads readings only for watched keys
among them); beyond it the notice says "any feeder" and the listener checks every watched key."""
READINGS_PER_KEY = 500
"""At most this many of the newest readings per watched key and notice: a backlog replayed in one batch
spans days, and the page reloads the charted series from the API anyway."""
WAIT_SECONDS = 1.0
"""How long one wait for notices lasts: a stop request is heeded within it."""
CATCH_UP_LIMIT = 1000
"""Anomalies sent to live clients after a reconnect at most (newest first); the page reloads its table
after its own reconnects, and a longer outage is better read from the API."""


def notify_stored(session: Session, origin: str, stored: StoredBatch) -> None:
    """Announce, within the ingest's transaction, what it stored (delivered to every listener at commit)."""
    if session.get_bind().dialect.name != "postgresql" or not (stored.anomalies or stored.readings
                                                                or stored.incident_events):
        return
    head: dict[str, Any] = {"o": origin, "a": []}
    if stored.incident_events:
        head["e"] = [e["event_id"] for e in stored.incident_events]  # a few per batch: incidents are rare
    if stored.readings:
        stamps = [r["timestamp_ms"] for r in stored.readings]
        feeders = sorted({r["feeder_id"] for r in stored.readings})
        head["r"] = [min(stamps), max(stamps)]
        head["f"] = feeders if len(feeders) <= FEEDERS_PER_NOTICE else None
    payloads, current = [], head
    for anomaly in stored.anomalies:
        if anomaly.get("suppressed_by"):
            continue  # suppressed by operator feedback: no live event, no alert on any replica
        current["a"].append(anomaly["id"])
        if len(json.dumps(current)) > PAYLOAD_BYTES:
            current["a"].pop()
            payloads.append(current)
            current = {"o": origin, "a": [anomaly["id"]]}
    payloads.append(current)
    for payload in payloads:
        session.execute(select(func.pg_notify(CHANNEL, json.dumps(payload, separators=(",", ":")))))


class DatabaseFeed:
    """Listens for :func:`notify_stored` notices and fans other replicas' records out to this replica's hub."""

    def __init__(self, engine: Engine, sessions: sessionmaker[Session], hub: EventHub, metrics: DashboardMetrics,
                 origin: str, on_alert_subjects: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.on_alert_subjects = on_alert_subjects
        """Also given the other replicas' incident events and anomalies (the alert rules: every replica checks
        every one, and the unique alert row lets one of them send, so one stored by a replica that died at once
        is still alerted)."""
        self.engine = engine
        self.sessions = sessions
        self.hub = hub
        self.metrics = metrics
        self.origin = origin
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()
        """Set while the listening connection is up (tests wait for it)."""
        self._last_anomaly_id: int | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _connect(self) -> Any:
        """A psycopg connection of its own (autocommit, as LISTEN needs), made from the engine's URL."""
        import psycopg

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        return psycopg.connect(*args, **kwargs, autocommit=True)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with self._connect() as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    if failures:
                        log.warning("recovered: listening for other replicas' records again")
                        self._catch_up()
                    failures = 0
                    self.listening.set()
                    while not self._stop.is_set():
                        for notice in connection.notifies(timeout=WAIT_SECONDS):
                            self._handle(notice.payload)
            except Exception as exc:  # noqa: BLE001 - the database may be away: listen again with backoff
                self.listening.clear()
                failures += 1
                wait = retry_wait(failures)  # the backoff every service uses: 1 s doubling to 30 s
                log.warning("live feed from the database interrupted (%s: %s); listening again in %.0f s",
                            type(exc).__name__, exc, wait, exc_info=failures == 1)
                self._stop.wait(wait)
        self.listening.clear()

    def _handle(self, payload: str) -> None:
        try:
            notice = json.loads(payload)
        except ValueError:
            log.warning("ignoring a notice on %s that is not JSON", CHANNEL)
            return
        ids = [int(i) for i in notice.get("a", [])]
        if ids:
            self._last_anomaly_id = max(ids + [self._last_anomaly_id or 0])
        if notice.get("o") == self.origin:
            self.metrics.feed_notifications.labels(origin="self").inc()
            return
        self.metrics.feed_notifications.labels(origin="other").inc()
        event_ids = [int(i) for i in notice.get("e", [])]
        if not self.hub.clients and (self.on_alert_subjects is None or not (ids or event_ids)):
            return
        with self.sessions() as session:
            anomalies = [anomaly_json(a) for a in session.scalars(
                select(Anomaly).where(Anomaly.id.in_(ids)).order_by(Anomaly.id))] if ids else []
            events = incident_events_json(session, IncidentEvent.id.in_(event_ids)) if event_ids else []
            readings, sums = ([], [])
            if "r" in notice and self.hub.clients:
                readings, sums = self._watched_readings(session, notice["r"][0], notice["r"][1], notice.get("f"))
        if (events or anomalies) and self.on_alert_subjects is not None:
            self.on_alert_subjects([*events, *anomalies])
        if self.hub.clients and (anomalies or readings or sums):
            self.hub.publish_threadsafe(anomalies, readings, sums)

    def _watched_readings(self, session: Session, first_ms: int, last_ms: int, feeders: list[str] | None,
                          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Readings of watched meters and totals of watched feeders in [first_ms, last_ms] (those in ``feeders``)."""
        readings: list[dict[str, Any]] = []
        sums: list[dict[str, Any]] = []
        in_span = Reading.timestamp_ms.between(first_ms, last_ms)
        for meter in sorted(self.hub.watched_meters()):
            if feeders is not None:
                feeder = session.scalar(select(Meter.feeder_id).where(Meter.meter_id == meter))
                if feeder not in feeders:
                    continue
            rows = session.execute(select(Reading.feeder_id, Reading.timestamp_ms, Reading.kwh)
                                   .where(Reading.meter_id == meter, in_span)
                                   .order_by(Reading.timestamp_ms.desc()).limit(READINGS_PER_KEY)).all()
            readings += [{"meter_id": meter, "feeder_id": f, "timestamp": iso(t), "kwh": k} for f, t, k in reversed(rows)]
        for feeder in sorted(self.hub.watched_feeders()):
            if feeders is not None and feeder not in feeders:
                continue
            rows = session.execute(select(Reading.timestamp_ms, func.sum(Reading.kwh))
                                   .where(Reading.feeder_id == feeder, in_span).group_by(Reading.timestamp_ms)
                                   .order_by(Reading.timestamp_ms.desc()).limit(READINGS_PER_KEY)).all()
            sums += [{"meter_id": None, "feeder_id": feeder, "timestamp": iso(t), "kwh": float(k or 0)}
                     for t, k in reversed(rows)]
        return readings, sums

    def _catch_up(self) -> None:
        """After a reconnect: send the anomalies stored since the last one seen (by any replica)."""
        if self._last_anomaly_id is None or not self.hub.clients:
            return
        with self.sessions() as session:
            rows = list(session.scalars(select(Anomaly).where(Anomaly.id > self._last_anomaly_id)
                                        .order_by(Anomaly.id.desc()).limit(CATCH_UP_LIMIT)))
        if rows:
            self._last_anomaly_id = rows[0].id
            self.hub.publish_threadsafe([anomaly_json(a) for a in reversed(rows)], [], [])
