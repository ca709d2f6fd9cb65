"""Database engine, sessions and schema migrations (Alembic, run programmatically at start-up)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file gets its directory, WAL mode and a busy timeout.

    WAL lets the API read while the ingest thread writes; the busy timeout makes a writer wait
    for the other instead of failing with "database is locked".
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
    return engine


MIGRATION_LOCK = 0x5761_7474_0001
"""PostgreSQL advisory lock taken around the migrations: replicas starting together on a new database migrate one
after the other (the second finds the schema current) instead of racing to create the same tables."""
PRUNE_LOCK = 0x5761_7474_0002
"""PostgreSQL advisory lock of the readings prune: one replica prunes at a time, the others skip that round."""


def try_advisory_lock(session: Session, key: int) -> bool:
    """Take a transaction-scoped PostgreSQL advisory lock if free (True); always True on SQLite (one process)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}))


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (``alembic upgrade head``) on ``engine``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.info("database schema is up to date (%s)", engine.url.render_as_string(hide_password=True))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def database_id(sessions: sessionmaker[Session]) -> str:
    """The random id this database was created with (its migration made it): names the ingest's consumer group."""
    from dashboard.models import DatabaseIdentity

    with sessions() as session:
        return session.get(DatabaseIdentity, 1).database_id
