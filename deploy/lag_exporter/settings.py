"""Settings of the consumer-lag exporter (``WATTSUP_LAG_EXPORTER_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from foundation.kafka_settings import KafkaConnection, TopicNames


class LagExporterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTSUP_LAG_EXPORTER_", env_file=".env", extra="ignore")

    port: int = 9103
    host: str = "127.0.0.1"
    """Address the metrics endpoint binds; 0.0.0.0 in a container so Prometheus can reach it."""
    groups: list[str] = Field(default_factory=list)
    """Consumer groups to report (JSON list in the environment); empty means every group the cluster lists."""
    request_timeout_seconds: float = Field(10.0, gt=0)
    """Per admin request: a scrape answers within about two of these even when the cluster does not."""
    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    topics: TopicNames = Field(default_factory=TopicNames)
