"""Settings of the forecaster (``WATTSUP_FORECAST_*``).

Connection and topics are the shared ``WATTSUP_KAFKA_*`` / ``WATTSUP_TOPIC_*`` settings; only the
forecaster's own tunables live here. Command-line options override them per run.
"""

from __future__ import annotations

from pathlib import Path
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from foundation.fleet_clock import FleetClock, check_country, check_timezone
from foundation.kafka_settings import PROJECT_ROOT, KafkaConnection, TopicNames


class ForecastSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTSUP_FORECAST_", env_file=".env", extra="ignore")

    history_seconds: float = Field(28 * 86400, gt=0)
    """How much of each meter's most recent history a fit sees (``--history``)."""
    horizon_seconds: float = Field(48 * 3600, gt=0)
    """How far ahead each forecast reaches (``--horizon``)."""
    every_seconds: float = Field(6 * 3600, gt=0)
    """Time between scheduled runs (``--every``)."""
    fit_interval_seconds: int = Field(3600, ge=0)
    """Sub-hourly meters are fitted on sums over this many seconds (0: their own interval); the
    forecast is still emitted at the meter's own interval so the stream joins it reading by reading."""
    workers: int = Field(2, ge=1)
    """Processes that fit meters in parallel."""
    min_history_days: float = Field(3.0, gt=0)
    """Less history than this gets the seasonal-naive forecast instead of Prophet."""
    interval_width: float = Field(0.8, gt=0, lt=1)
    """Coverage of the band (as Prophet's ``interval_width``)."""
    n_changepoints: int = Field(10, ge=0)
    """Trend changepoints; 28 days of usage need few, and fewer make the fit cheaper."""
    changepoint_prior_scale: float = Field(0.05, gt=0)
    daily_fourier_order: int = Field(8, ge=1)
    """Harmonics of each daily shape (weekday and weekend): 8 follows a one-hour-wide peak, Prophet's
    default 4 smooths it away (README, Forecasting: the backtest with each)."""
    seasonality_mode: str = Field("additive", pattern="^(additive|multiplicative)$")
    timezone: str = Field(default_factory=lambda: FleetClock().timezone)
    """IANA time zone of the fleet (e.g. ``Africa/Nairobi``): weekends begin at its local midnight.
    Defaults to the fleet's clock (``WATTSUP_FLEET_TIMEZONE``), which the detector follows too."""
    country_holidays: str | None = Field(default_factory=lambda: FleetClock().country)
    """ISO country code (e.g. ``KE``) whose public holidays Prophet models; defaults to the fleet's
    (``WATTSUP_FLEET_COUNTRY``), whose holidays the detector treats as non-working days."""
    warm_start: bool = True
    """Start each fit from the meter's parameters of the previous run (kept under ``data_dir``)."""
    data_dir: Path = PROJECT_ROOT / "var" / "forecaster"
    """Warm-start parameters and the previous horizon (for accuracy as it comes due)."""
    produced_days: float | None = Field(None, gt=0)
    """Read records produced in the last N days (by Kafka message time); unset: the history window."""
    metrics_port: int = 9102
    """Prometheus endpoint of ``wattsup forecast schedule`` (0: none)."""
    group_id: str = Field("wattsup-forecaster", min_length=1)
    """Kafka consumer group of ``wattsup forecast schedule``: instances with the same id share the fleet by the
    readings partitions the group assigns them (one instance alone owns them all)."""
    group_session_timeout_ms: int = Field(45_000, ge=6_000, le=300_000)
    """How long the group waits for a silent instance (a crash, ``kill -9``) before its partitions move to the
    others: librdkafka's default; the broker's ``group.min/max.session.timeout.ms`` (6 s to 30 min) bound it."""
    group_join_timeout_seconds: float = Field(60.0, gt=0)
    """How long a run waits for the instance's first partition assignment before it fails (and is retried)."""
    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    topics: TopicNames = Field(default_factory=TopicNames)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("country_holidays")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        return check_country(value)
