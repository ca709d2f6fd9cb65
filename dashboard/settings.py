"""Settings of the dashboard service (``WATTSUP_DASHBOARD_*``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from foundation.kafka_settings import PROJECT_ROOT, KafkaConnection, TopicNames
from schemas.limits import FUTURE_TOLERANCE

DEFAULT_DATABASE_URL = f"sqlite:///{PROJECT_ROOT / 'var' / 'dashboard' / 'wattsup.db'}"


def _model_dir() -> Path:
    from models.settings import ModelSettings

    return ModelSettings().dir


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTSUP_DASHBOARD_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy URL: a SQLite file by default, ``postgresql+psycopg://...`` for PostgreSQL."""
    read_public: bool | None = None
    """Whether the reading endpoints answer without a token (writing ones always need one; alert rules and alert
    history always need one too). Unset: public only while the service listens on a loopback address with no
    trusted proxy in front (the demo on 127.0.0.1), private as soon as other machines can reach it."""
    consume: bool = True
    """Follow the anomalies, readings and forecasts topics (off for a read-only replica or API tests)."""
    max_upload_mb: float = 50.0
    """Largest CSV ``POST /api/v1/detect`` accepts."""
    max_json_body_mb: float = 5.0
    """Largest JSON body ``POST /api/v1/readings`` accepts."""
    ingest_ack_timeout_seconds: float = 10.0
    """How long POST /api/v1/readings waits for the broker's acknowledgement before answering 503 with Retry-After."""
    ingest_rate_per_minute: int = 600
    """Requests per minute one token (or client address) may make to the writing endpoints."""
    detect_rate_per_minute: int = 10
    """CSV uploads per minute per token: each may take seconds of CPU."""
    detect_concurrency: int = 1
    """Uploads scored at once; more wait their turn (a million-row upload needs about 1.5 GB while scored)."""
    session_hours: float = 12.0
    cookie_secure: bool | None = None
    """Mark the session cookie Secure. Unset: when the login request came over HTTPS, directly or (with
    ``trusted_proxies``) as a proxy's ``X-Forwarded-Proto: https``; true forces it, false never sets it."""
    trusted_proxies: Annotated[list[str], NoDecode] = []
    """Addresses (or networks) of reverse proxies whose ``X-Forwarded-Proto`` and ``X-Forwarded-For`` are believed,
    comma-separated, e.g. ``127.0.0.1``. Empty: those headers are ignored."""
    allowed_origins: Annotated[list[str], NoDecode] = []
    """Origins besides the service's own (scheme://host[:port] from the Host header) that may send writing
    requests, comma-separated; only needed when a proxy rewrites the Host header."""
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = []
    """Where alert webhooks may go, comma-separated: host names (``hooks.example.org``, ``*.example.org``), addresses
    or networks (``10.1.2.0/24``). Empty: any public address, never loopback, private, link-local, multicast or
    reserved ones. Listed networks, and hosts listed by name, may be private (an internal receiver)."""
    max_small_body_kb: float = 64.0
    """Largest body of the other writing endpoints (alert rules, sensitivity, sign-in): they take a few fields."""
    readings_retention_days: float = 14.0
    """Readings older than this (behind the wall clock, or behind the newest reading when all are older, as in a
    replayed history) are deleted; anomalies are kept."""
    future_tolerance_hours: float = FUTURE_TOLERANCE.total_seconds() / 3600
    """How far past the wall clock a reading or anomaly may be stamped (schemas.limits.FUTURE_TOLERANCE, a day);
    later ones are refused by POST /readings and skipped by the ingest. Raise it only for a simulator that runs
    ahead of real time."""
    consumer_batch: int = 5000
    """Kafka messages stored per database transaction at most."""
    ingest_group_id: str | None = Field(None, min_length=1)
    """Kafka consumer group of the ingest. Replicas on one database share the topics' partitions in it, so each
    record is stored by one of them; offsets are kept in the database, never committed to Kafka. Unset:
    ``wattsup-dashboard-<id>``, with the random id the database was created with, so dashboards on one database
    are one group and a dashboard on another database (another SQLite file) stores everything itself."""
    ingest_session_timeout_ms: int = Field(45_000, ge=6_000, le=300_000)
    """How long the group waits for a silent replica (a crash) before its partitions move to the others:
    librdkafka's default; the broker's ``group.min/max.session.timeout.ms`` (6 s to 30 min) bound it."""
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_sender: str = "wattsup@localhost"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_ca_file: Path | None = None
    """PEM bundle to verify the SMTP server's certificate with (default: the system's CAs)."""
    smtp_timeout_seconds: float = 10.0
    webhook_timeout_seconds: float = 5.0
    alert_delivery_attempts: int = 6
    """Tries of one webhook or e-mail before it is recorded as failed for good (a refused destination: one)."""
    alert_retry_first_seconds: float = 30.0
    """Wait before the second try; each later wait doubles ..."""
    alert_retry_max_seconds: float = 1800.0
    """... up to this (with the defaults the six tries span about 15 minutes)."""
    alert_on: Literal["anomalies", "incidents"] = "incidents"
    """What alert rules fire on: each incident's opening, escalation to a higher severity and closing (the
    default: one alarm per event, never one per reading), or every anomaly (``anomalies``)."""
    alert_rate_per_hour: int = 10
    """Alerts one rule may send about one meter per hour; the rest are recorded as ``suppressed``."""
    timezone: str = "UTC"
    """Time zone of alert rules' quiet hours."""
    summary_seconds: float = 5.0
    keepalive_seconds: float = 15.0
    model_dir: Path = Field(default_factory=lambda: _model_dir())
    """Detector versions (default ``WATTSUP_MODEL_DIR``): listed by the API, used by uploads."""
    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    topics: TopicNames = Field(default_factory=TopicNames)

    @field_validator("trusted_proxies", "allowed_origins", "webhook_allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def reads_public(self) -> bool:
        """The effective ``read_public``: see there."""
        if self.read_public is not None:
            return self.read_public
        if self.trusted_proxies:
            return False
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def future_tolerance_ms(self) -> int:
        return int(self.future_tolerance_hours * 3_600_000)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_small_body_bytes(self) -> int:
        return int(self.max_small_body_kb * 1024)

    @property
    def max_json_body_bytes(self) -> int:
        return int(self.max_json_body_mb * 1024 * 1024)
