"""Settings of the local broker launcher (``WATTSUP_BROKER_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from foundation.kafka_settings import PROJECT_ROOT, KafkaConnection, TopicNames


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTSUP_BROKER_", env_file=".env", extra="ignore")

    port: int = 9092
    controller_port: int | None = None
    data_dir: Path = PROJECT_ROOT / "var" / "kafka"
    cache_dir: Path = PROJECT_ROOT / ".cache"
    heap: str = "512m"
    nodes: int = Field(1, ge=1)
    """Nodes of the local cluster `wattsup broker start` runs (3 for a replicated one)."""
    startup_timeout_seconds: float = 90.0
    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    topics: TopicNames = Field(default_factory=TopicNames)
