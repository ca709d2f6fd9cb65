"""Storage details: the migrations match the models and upgrade old databases, retention pruning, live-event fan-out."""

from __future__ import annotations

import asyncio
import re

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from dashboard.events import EventHub
from dashboard.ingest import KafkaIngest
from dashboard.models import Base, Reading
from dashboard.store import prune_readings
from tests.dashboard.conftest import QUARTER, T0, anomaly_record, reading_row


def test_migrations_create_exactly_the_models_schema(dash):
    with dash.service.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def _schema(engine) -> dict:
    """Every table with its columns (name, type, nullability, default), indexes, unique constraints and
    foreign keys, and the Alembic revision: what a migration could change."""
    inspector = inspect(engine)
    tables = {}
    for table in sorted(inspector.get_table_names()):
        tables[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)),
            "unique": sorted((u["name"] or "", tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)),
            "foreign_keys": sorted((f["name"] or "", tuple(f["constrained_columns"]), f["referred_table"])
                                   for f in inspector.get_foreign_keys(table)),
        }
    with engine.connect() as connection:
        tables["(revision)"] = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return tables


def test_migrating_twice_is_a_no_op(dash):
    from dashboard.db import migrate

    engine = dash.service.engine
    dash.store(readings=[reading_row("M1", T0, 1.0)], anomalies=[anomaly_record("M1", T0)])
    migrated_once = _schema(engine)
    assert "readings" in migrated_once and migrated_once["readings"]["indexes"], migrated_once.keys()
    with engine.connect() as connection:
        rows_before = {t: connection.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar()  # names from inspect
                       for t in migrated_once if not t.startswith("(")}
    migrate(engine)
    migrate(engine)
    assert _schema(engine) == migrated_once
    with engine.connect() as connection:
        assert {t: connection.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar() for t in rows_before} == rows_before


def _alembic_to(engine, revision: str, *, down: bool = False) -> None:
    """Move ``engine``'s schema to ``revision`` with the service's own migration scripts."""
    from alembic import command
    from alembic.config import Config

    from dashboard.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def test_a_database_from_before_the_baseline_columns_is_migrated_and_keeps_its_anomalies(dashboard_factory, tmp_path):
    """An existing database at revision 0002 (anomaly schema version 1) gains band_residual and baseline as
    nulls for the anomalies it holds, and the service then stores and serves version 2 anomalies with both."""
    from dashboard.db import make_engine

    url = f"sqlite:///{tmp_path / 'old' / 'wattsup.db'}"
    engine = make_engine(url)
    _alembic_to(engine, "0002")
    old_columns = {c["name"] for c in inspect(engine).get_columns("anomalies")}
    assert "baseline" not in old_columns and "band_residual" not in old_columns
    with engine.begin() as connection:  # what a version 1 writer left: the baseline in expected
        connection.execute(text(
            "INSERT INTO anomalies (meter_id, feeder_id, timestamp_ms, observed, expected, lower, upper, residual, "
            "score, severity, kind, causes, model_version, detected_at_ms) VALUES "
            "('OLD', 'F1', :ts, 4.0, 1.0, NULL, NULL, 3.0, 0.9, 'CRITICAL', 'spike', '[]', 'v1', :ts)"), {"ts": T0})
    engine.dispose()

    dash = dashboard_factory(database_url=url)  # the service migrates at start-up
    with dash.service.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0007"
    dash.store(anomalies=[anomaly_record("NEW", T0 + QUARTER, expected=None, lower=None, upper=None, residual=None,
                                         band_residual=None, baseline=0.7)])
    items = {a["meter_id"]: a for a in dash.client.get("/api/v1/anomalies").json()["items"]}
    assert (items["OLD"]["expected"], items["OLD"]["baseline"], items["OLD"]["band_residual"]) == (1.0, None, None)
    assert (items["NEW"]["expected"], items["NEW"]["baseline"], items["NEW"]["band_residual"]) == (None, 0.7, None)


def test_the_baseline_migration_downgrades_and_upgrades_again(dash):
    engine = dash.service.engine
    dash.store(anomalies=[anomaly_record("M1", T0)])
    _alembic_to(engine, "0002", down=True)
    assert "baseline" not in {c["name"] for c in inspect(engine).get_columns("anomalies")}
    _alembic_to(engine, "head")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT meter_id, baseline FROM anomalies")).all() == [("M1", None)]


def test_prune_keeps_the_retention_window_behind_the_wall_clock(dash):
    day = 96 * QUARTER
    dash.store(readings=[reading_row("M1", T0 + i * QUARTER, 1.0) for i in range(20 * 96)])
    dash.store(readings=[reading_row("CLOCK", T0 + 3650 * day, 1.0)])  # a wrong clock: ignored by the cutoff
    now = T0 + 20 * day
    with dash.service.sessions.begin() as session:
        removed = prune_readings(session, 14 * day, now=now)
    with dash.service.sessions() as session:
        remaining = session.scalar(select(func.count()).select_from(Reading).where(Reading.meter_id == "M1"))
        oldest = session.scalar(select(func.min(Reading.timestamp_ms)))
    assert oldest == now - 14 * day
    assert removed + remaining == 20 * 96 and remaining == 14 * 96


def test_prune_of_a_replayed_history_keeps_the_window_behind_its_newest_reading(dash):
    """All readings older than the wall clock (a back-fill or replay): the last 14 days of it stay."""
    day = 96 * QUARTER
    dash.store(readings=[reading_row("M1", T0 + i * QUARTER, 1.0) for i in range(20 * 96)])
    newest = T0 + (20 * 96 - 1) * QUARTER
    with dash.service.sessions.begin() as session:
        removed = prune_readings(session, 14 * day, now=newest + 365 * day)
    with dash.service.sessions() as session:
        remaining = session.scalar(select(func.count()).select_from(Reading))
        oldest = session.scalar(select(func.min(Reading.timestamp_ms)))
    assert oldest == newest - 14 * day
    assert removed + remaining == 20 * 96 and remaining == 14 * 96 + 1


def test_feeder_sums_are_totals_over_all_stored_meters_of_the_timestamp(dash):
    ingest = KafkaIngest(dash.settings, dash.service.sessions, dash.service.metrics)
    dash.store(readings=[reading_row("M1", T0, 1.0), reading_row("M2", T0, 2.0, feeder="F1")])
    later = dash.store(readings=[reading_row("M3", T0, 4.0), reading_row("M9", T0, 8.0, feeder="F2")])
    sums = ingest.feeder_sums(later, {"F1"})
    assert sums == [{"meter_id": None, "feeder_id": "F1", "timestamp": "2026-11-18T11:06:40Z", "kwh": 7.0}]


def test_hub_sends_anomalies_to_all_and_readings_only_to_the_key_asked_for():
    async def scenario():
        hub = EventHub()
        hub.bind(asyncio.get_running_loop())
        everyone = hub.subscribe()
        meter = hub.subscribe(meter_id="M1")
        feeder = hub.subscribe(feeder_id="F2")
        assert hub.watched_meters() == {"M1"} and hub.watched_feeders() == {"F2"}
        anomaly = {"id": 1, **anomaly_record("M5", T0)}
        readings = [{"meter_id": "M1", "feeder_id": "F1", "timestamp": "t", "kwh": 1.0},
                    {"meter_id": "M2", "feeder_id": "F2", "timestamp": "t", "kwh": 2.0}]
        sums = [{"meter_id": None, "feeder_id": "F2", "timestamp": "t", "kwh": 2.0}]
        hub.publish_threadsafe([anomaly], readings, sums)
        await asyncio.sleep(0.05)

        def drain(s):
            out = []
            while not s.queue.empty():
                out.append(s.queue.get_nowait())
            return out

        assert drain(everyone) == [("anomaly", anomaly)]
        assert drain(meter) == [("anomaly", anomaly), ("reading", readings[0])]
        assert drain(feeder) == [("anomaly", anomaly), ("reading", sums[0])]
        hub.unsubscribe(meter)
        assert hub.clients == 2

    asyncio.run(scenario())


def test_a_slow_client_loses_events_instead_of_blocking():
    async def scenario():
        hub = EventHub()
        hub.bind(asyncio.get_running_loop())
        slow = hub.subscribe()
        for i in range(slow.queue.maxsize + 10):
            hub.publish_threadsafe([{"id": i}], [], [])
        await asyncio.sleep(0.05)
        assert slow.queue.full() and slow.dropped == 10

    asyncio.run(scenario())


def test_a_stored_offset_never_moves_backwards(dash):
    """A replica whose partition moved on (its session expired mid-batch) may still commit one late batch."""
    from dashboard.store import IngestBatch, store_batch, stored_offsets

    with dash.service.sessions.begin() as session:
        store_batch(session, IngestBatch(offsets={("t", 0): 10}))
    with dash.service.sessions.begin() as session:
        store_batch(session, IngestBatch(offsets={("t", 0): 5, ("t", 1): 3}))
    with dash.service.sessions() as session:
        assert stored_offsets(session, ["t"]) == {("t", 0): 10, ("t", 1): 3}


def test_dashboards_on_one_database_are_one_ingest_group_and_others_have_their_own(dashboard_factory, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared' / 'wattsup.db'}"
    first, again, elsewhere = dashboard_factory(database_url=url), dashboard_factory(database_url=url), dashboard_factory()
    assert first.service.group_id == again.service.group_id != elsewhere.service.group_id
    assert re.fullmatch(r"wattsup-dashboard-[0-9a-f]{16}", first.service.group_id)
    assert dashboard_factory(ingest_group_id="dashboards-east").service.group_id == "dashboards-east"
