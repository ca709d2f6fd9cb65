"""Dashboard fixtures: an app on a temp SQLite database, a token, and a way to store records as ingest does."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dashboard.app import create_app
from dashboard.auth import create_token
from dashboard.service import DashboardService
from dashboard.settings import DashboardSettings
from dashboard.store import IngestBatch, StoredBatch, store_batch

POSTGRES_URL = os.environ.get("WATTSUP_TEST_POSTGRES_URL")
"""Optional: a PostgreSQL server URL (e.g. ``postgresql+psycopg://user@127.0.0.1:5432/postgres``); the API
tests then run on a fresh database there instead of a SQLite file. Unset (the default) means SQLite."""

T0 = 1_795_000_000_000
"""A fixed reading time (ms) so tests do not depend on the clock."""
QUARTER = 900_000


def anomaly_record(meter: str, ts: int, severity: str = "WARNING", feeder: str = "F1", score: float = 0.8,
                   **extra: Any) -> dict[str, Any]:
    """An Anomaly record as the stream worker writes it (schema version 2, raw millisecond timestamps).

    A forecast covers it by default; pass ``expected=None, lower=None, upper=None, residual=None,
    band_residual=None`` for one without (the worker then sends only the baseline).
    """
    return {"meter_id": meter, "feeder_id": feeder, "timestamp": ts, "observed": 5.0, "expected": 1.0, "lower": 0.5,
            "upper": 1.5, "residual": 4.0, "band_residual": 8.0, "baseline": 1.2, "score": score,
            "severity": severity, "kind": "spike",
            "causes": [{"feature": "ratio", "contribution": 0.7, "text": "usage 5x the usual"},
                       {"feature": "change_z", "contribution": 0.3, "text": "sudden jump"}],
            "model_version": "v1", "detected_at": ts + 1000, **extra}


def reading_row(meter: str, ts: int, kwh: float, feeder: str = "F1") -> dict[str, Any]:
    return {"meter_id": meter, "feeder_id": feeder, "timestamp_ms": ts, "kwh": kwh, "interval_seconds": 900}


@dataclass
class DashboardHarness:
    client: TestClient
    service: DashboardService
    token: str
    settings: DashboardSettings

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def store(self, anomalies: list[dict[str, Any]] = (), readings: list[dict[str, Any]] = (),
              forecasts: list[dict[str, Any]] = ()) -> StoredBatch:
        """Store records exactly as the Kafka ingest does (same function, same transaction shape)."""
        batch = IngestBatch(anomalies=list(anomalies), readings=list(readings), forecasts=list(forecasts))
        with self.service.sessions.begin() as session:
            return store_batch(session, batch)


class _PostgresDatabases:
    """Fresh PostgreSQL databases for one test, dropped afterwards."""

    def __init__(self, server_url: str) -> None:
        from sqlalchemy import create_engine

        self.server_url = server_url
        self.admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def create(self) -> str:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        name = f"wattsup_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))  # a generated name, never user input
        self.names.append(name)
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        from sqlalchemy import text

        with self.admin.connect() as connection:
            for name in self.names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server for the session: ``WATTSUP_TEST_POSTGRES_URL`` if set, else one started here
    (initdb and pg_ctl in a temp dir, a free port; stopped and removed at the end)."""
    if POSTGRES_URL:
        yield POSTGRES_URL
        return
    from tests.postgres_server import LocalPostgres

    server = LocalPostgres.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def postgres_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """Makes fresh PostgreSQL databases on the session's server (their URLs), dropped after the test."""
    databases = _PostgresDatabases(postgres_server)
    yield databases.create
    databases.drop_all()


@pytest.fixture
def dashboard_factory(tmp_path: Path) -> Iterator[Callable[..., DashboardHarness]]:
    clients: list[TestClient] = []
    postgres = _PostgresDatabases(POSTGRES_URL) if POSTGRES_URL else None

    def make(**overrides: Any) -> DashboardHarness:
        url = postgres.create() if postgres else f"sqlite:///{tmp_path / f'db{len(clients)}' / 'wattsup.db'}"
        fields = {"database_url": url, "consume": False, "model_dir": tmp_path / "models", **overrides}
        settings = DashboardSettings(**fields)
        app = create_app(settings)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        service: DashboardService = app.state.service
        token = create_token(service.sessions, "tester" if len(clients) == 1 else f"tester-{len(clients)}")
        return DashboardHarness(client, service, token, settings)

    yield make
    for client in clients:
        client.__exit__(None, None, None)
    if postgres:
        postgres.drop_all()


@pytest.fixture
def dash(dashboard_factory: Callable[..., DashboardHarness]) -> DashboardHarness:
    return dashboard_factory()
