"""Database tables of the dashboard (SQLAlchemy 2 ORM); the schema itself is made by the migrations.

Timestamps are stored as integer UTC milliseconds, as on the wire: exact, portable between SQLite
and PostgreSQL, and cheap to compare and index. The API turns them into ISO 8601 strings.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Anomaly(Base):
    """One anomaly the stream emitted; (meter_id, timestamp) is unique so a re-delivered one is not stored twice.

    ``expected``, ``lower``, ``upper`` and ``residual`` are the forecast's (null when no forecast covered
    the reading); ``baseline`` is the meter's usual usage, kept apart so the two are never confused.
    Anomalies stored from schema version 1 may hold the baseline in ``expected`` and have no ``baseline``.
    """

    __tablename__ = "anomalies"
    __table_args__ = (
        UniqueConstraint("meter_id", "timestamp_ms", name="uq_anomalies_meter_ts"),
        Index("ix_anomalies_ts", "timestamp_ms"),
        Index("ix_anomalies_feeder_ts", "feeder_id", "timestamp_ms"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meter_id: Mapped[str] = mapped_column(String(128))
    feeder_id: Mapped[str] = mapped_column(String(128))
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    observed: Mapped[float] = mapped_column(Float)
    expected: Mapped[float | None] = mapped_column(Float, nullable=True)
    lower: Mapped[float | None] = mapped_column(Float, nullable=True)
    upper: Mapped[float | None] = mapped_column(Float, nullable=True)
    residual: Mapped[float | None] = mapped_column(Float, nullable=True)
    band_residual: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Residual over half the forecast band's width (beyond 1 or -1: outside the band); null without a forecast."""
    baseline: Mapped[float | None] = mapped_column(Float, nullable=True)
    """The meter's usual kWh for the hour of week; null for anomalies stored from schema version 1."""
    score: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    causes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    model_version: Mapped[str] = mapped_column(String(64))
    detected_at_ms: Mapped[int] = mapped_column(BigInteger)
    suppressed_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """Why operator feedback suppressed it (Anomaly schema version 3), or null: suppressed anomalies are kept,
    shown by the API only on request, and never alerted."""


class Incident(Base):
    """The newest record (highest revision) of each incident on the incidents topic."""

    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_status_started", "status", "started_ms"),
        Index("ix_incidents_feeder", "feeder_id"),
        Index("ix_incidents_meter", "meter_id"),
    )

    incident_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    meter_id: Mapped[str] = mapped_column(String(128))
    feeder_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(16))
    started_ms: Mapped[int] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int] = mapped_column(BigInteger)
    ended_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    closed_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    interval_seconds: Mapped[int] = mapped_column(Integer)
    peak_severity: Mapped[str] = mapped_column(String(16))
    readings: Mapped[int] = mapped_column(Integer)
    energy_delta_kwh: Mapped[float] = mapped_column(Float)
    worst_timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    worst_score: Mapped[float] = mapped_column(Float)
    causes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(Integer)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class IncidentEvent(Base):
    """One alertable change of an incident (opened, escalated:<severity>, closed), recorded in the transaction
    that stores the incident record: the alert dispatcher checks them in id order behind its cursor, so one
    stored just before a crash, or whose check failed, is checked again (unique: recorded once whoever
    stores the record, even two replicas at once)."""

    __tablename__ = "incident_events"
    __table_args__ = (UniqueConstraint("incident_id", "event", name="uq_incident_events_incident_event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(24))
    revision: Mapped[int] = mapped_column(Integer)
    stored_at_ms: Mapped[int] = mapped_column(BigInteger)


class Reading(Base):
    """One stored reading; the primary key (meter_id, timestamp) makes re-delivery harmless."""

    __tablename__ = "readings"
    __table_args__ = (
        Index("ix_readings_feeder_ts", "feeder_id", "timestamp_ms"),
        Index("ix_readings_ts", "timestamp_ms"),
    )

    meter_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    timestamp_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    feeder_id: Mapped[str] = mapped_column(String(128))
    kwh: Mapped[float] = mapped_column(Float)
    interval_seconds: Mapped[int] = mapped_column(Integer)


class Meter(Base):
    """Every meter seen, with its feeder and newest reading: keeps the meter list and summary cheap."""

    __tablename__ = "meters"
    __table_args__ = (Index("ix_meters_feeder", "feeder_id"),)

    meter_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    feeder_id: Mapped[str] = mapped_column(String(128))
    last_reading_ms: Mapped[int] = mapped_column(BigInteger)


class Forecast(Base):
    """The newest forecast of each meter; ``points`` is a list of [timestamp_ms, expected, lower, upper]."""

    __tablename__ = "forecasts"

    meter_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    feeder_id: Mapped[str] = mapped_column(String(128))
    generated_at_ms: Mapped[int] = mapped_column(BigInteger)
    model_version: Mapped[str] = mapped_column(String(64))
    interval_seconds: Mapped[int] = mapped_column(Integer)
    points: Mapped[list[list[float]]] = mapped_column(JSON)


class DatabaseIdentity(Base):
    """One row: a random id of this database, made by its migration. Dashboards on the same database share
    the ingest's consumer group ``wattsup-dashboard-<id>``; one on another database is in a group of its own."""

    __tablename__ = "database_identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    database_id: Mapped[str] = mapped_column(String(32))


class ConsumerOffset(Base):
    """Next offset to read per topic-partition, written in the same transaction as the rows it covers."""

    __tablename__ = "consumer_offsets"

    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)


class AlertRule(Base):
    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    min_severity: Mapped[str] = mapped_column(String(16))
    meter_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    feeder_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    quiet_start: Mapped[str | None] = mapped_column(String(5), nullable=True)
    quiet_end: Mapped[str | None] = mapped_column(String(5), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    email_to: Mapped[str | None] = mapped_column(String(320), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class Alert(Base):
    """One alert decision; (rule, anomaly, channel), or (rule, incident, event, channel), is unique so nothing is
    alerted twice."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("rule_id", "anomaly_id", "channel", name="uq_alerts_rule_anomaly_channel"),
        UniqueConstraint("rule_id", "incident_id", "incident_event", "channel", name="uq_alerts_rule_incident_event_channel"),
        Index("ix_alerts_rule_meter_sent", "rule_id", "meter_id", "sent_at_ms"),
        Index("ix_alerts_status_next", "status", "next_attempt_ms"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    rule_name: Mapped[str] = mapped_column(String(128))
    anomaly_id: Mapped[int | None] = mapped_column(ForeignKey("anomalies.id", ondelete="CASCADE"), nullable=True)
    """The anomaly alerted (``alert_on`` anomalies), or null for an incident's alert."""
    incident_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    incident_event: Mapped[str | None] = mapped_column(String(24), nullable=True)
    """opened, escalated:<severity> or closed: each alerted once per rule and channel."""
    meter_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    sent_at_ms: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """Delivery attempts made so far."""
    next_attempt_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """When a ``retrying`` delivery is tried again; null otherwise."""


class AlertCursor(Base):
    """Id of the newest anomaly the alert dispatcher has checked (one row).

    Anomalies stored but not yet checked when the process stopped are checked at the next start;
    the unique alert rows make checking one twice harmless.
    """

    __tablename__ = "alert_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_anomaly_id: Mapped[int] = mapped_column(Integer)
    last_incident_event_id: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Id of the newest incident event checked (:class:`IncidentEvent`)."""


class ApiToken(Base):
    """An API token, stored only as the SHA-256 of the token (tokens are 32 random bytes)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class WebSession(Base):
    """A browser session opened with a token; the cookie value is stored hashed like a token."""

    __tablename__ = "web_sessions"

    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"))
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)
