"""The dashboard's long-lived parts, built once per app and shared by every request.

Kafka-facing parts (the ingest consumer, the readings producer, the sensitivity watcher) are
created on demand, so an app for pure API tests needs no broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dashboard.alerts import AlertDispatcher
from dashboard.db import database_id, make_engine, migrate, session_factory
from dashboard.detect import ModelCache
from dashboard.events import EventHub
from dashboard.ingest import KafkaIngest
from dashboard.live_feed import DatabaseFeed
from dashboard.metrics import DashboardMetrics
from dashboard.ratelimit import RateLimiter
from dashboard.settings import DashboardSettings
from dashboard.store import StoredBatch, summary
from dashboard.timeutil import iso

log = logging.getLogger(__name__)


def _import_model_code() -> None:
    import detection.offline  # noqa: F401
    import models.artifacts  # noqa: F401


class DashboardService:
    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.engine: Engine = make_engine(settings.database_url)
        migrate(self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.metrics = DashboardMetrics()
        self.hub = EventHub()
        self.replica = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        """This process's name among the replicas of its database (in its notices and log lines)."""
        self.group_id = settings.ingest_group_id or f"wattsup-dashboard-{database_id(self.sessions)}"
        self.feed: DatabaseFeed | None = None
        """The other replicas' records for this one's live clients (PostgreSQL only)."""
        self.alerts = AlertDispatcher(settings, self.sessions, self.metrics)
        self.ingest: KafkaIngest | None = None
        self.write_limiter = RateLimiter(settings.ingest_rate_per_minute)
        self.detect_limiter = RateLimiter(settings.detect_rate_per_minute)
        self.model_cache = ModelCache(settings.model_dir)
        self.detect_slots = asyncio.Semaphore(max(1, settings.detect_concurrency))
        self._sender: Any = None
        self._watcher: Any = None
        self._lock = threading.Lock()
        self._summary_lock = threading.Lock()
        self._summary: tuple[float, dict[str, Any]] | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, consume: bool | None = None) -> None:
        # Importing the model code (scikit-learn) takes seconds; do it now, not in the first request.
        threading.Thread(target=_import_model_code, name="warm-up", daemon=True).start()
        self.alerts.start()
        if self.engine.dialect.name == "postgresql":  # several replicas may share the database: follow theirs too
            self.feed = DatabaseFeed(self.engine, self.sessions, self.hub, self.metrics, self.replica,
                                     on_alert_subjects=self.alerts.submit)
            self.feed.start()
        if self.settings.consume if consume is None else consume:
            self.start_ingest()
            self.sensitivity_watcher()

    def start_ingest(self) -> KafkaIngest:
        if self.ingest is None:
            self.ingest = KafkaIngest(self.settings, self.sessions, self.metrics, on_stored=self._on_stored,
                                      group_id=self.group_id, origin=self.replica)
            self.ingest.start()
        return self.ingest

    def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
        if self.feed is not None:
            self.feed.stop()
        self.alerts.stop()
        if self._watcher is not None:
            self._watcher.stop()
        if self._sender is not None:
            left = self._sender.close()
            if left:
                log.error("%d records of POST /api/v1/readings were still undelivered at shutdown", left)
        self.engine.dispose()

    # -- stored records fan out to live clients and alerts ----------------------------
    def count_open_incidents(self) -> None:
        """Refresh ``wattsup_dashboard_incidents_open`` from the database (at each scrape)."""
        from dashboard.store import INCIDENT_KINDS, SEVERITIES, open_incidents_by_kind_and_severity

        try:
            with self.sessions() as session:
                counts = open_incidents_by_kind_and_severity(session)
        except Exception:  # noqa: BLE001 - a locked or unreachable database must not fail the scrape
            log.warning("could not count open incidents for the metrics", exc_info=True)
            return
        gauge = self.metrics.incidents_open
        gauge.clear()
        # every known kind and severity, zeros included: a bounded set (27 series), and "none open" is data
        for kind in sorted({*INCIDENT_KINDS, *(k for k, _ in counts)}):
            for severity in SEVERITIES:
                gauge.labels(kind=kind, severity=severity).set(counts.get((kind, severity), 0))

    def _on_stored(self, stored: StoredBatch) -> None:
        # both, whatever alert_on says: the dispatcher skips the other kind, and both cursors move on
        self.alerts.submit([*stored.incident_events, *stored.anomalies])
        if not self.hub.clients:
            return
        meters = self.hub.watched_meters()
        readings = [{"meter_id": r["meter_id"], "feeder_id": r["feeder_id"], "timestamp": iso(r["timestamp_ms"]),
                     "kwh": r["kwh"]} for r in stored.readings if r["meter_id"] in meters]
        feeders = self.hub.watched_feeders()
        sums = self.ingest.feeder_sums(stored, feeders) if feeders and self.ingest is not None else []
        standing = [a for a in stored.anomalies if not a.get("suppressed_by")]  # suppressed: on request only
        self.hub.publish_threadsafe(standing, readings, sums)

    # -- Kafka clients on demand ------------------------------------------------------
    def reading_sender(self) -> Any:
        """The shared producer of ``POST /api/v1/readings`` (idempotent, keyed by feeder), created on first use."""
        with self._lock:
            if self._sender is None:
                from dashboard.readings_sender import ReadingSender

                self._sender = ReadingSender(self.settings.kafka, self.settings.topics,
                                             self.settings.ingest_ack_timeout_seconds)
            return self._sender

    def sensitivity_watcher(self) -> Any:
        """The dashboard's follower of the control topic (retries for as long as the service runs)."""
        with self._lock:
            if self._watcher is None:
                from foundation.sensitivity import SensitivityWatcher

                self._watcher = SensitivityWatcher(self.settings.kafka, self.settings.topics,
                                                   group_id="wattsup-dashboard-sensitivity")
                self._watcher.start()
            return self._watcher

    # -- models -----------------------------------------------------------------------
    def model_versions(self) -> list[dict[str, Any]]:
        from models.artifacts import list_versions

        return [asdict(m) for m in reversed(list_versions(self.settings.model_dir))]

    def cached_summary(self) -> dict[str, Any]:
        """The fleet summary, computed at most once a second however many live clients ask."""
        with self._summary_lock:
            now = time.monotonic()
            if self._summary is None or now - self._summary[0] > 1.0:
                with self.sessions() as session:
                    self._summary = (now, summary(session, self.current_model_version()))
            return self._summary[1]

    def current_model_version(self) -> str | None:
        from models.artifacts import latest_version

        return latest_version(self.settings.model_dir)
