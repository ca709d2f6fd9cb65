"""Settings of the producers (``WATTSUP_PRODUCER_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from wattsup.kafka_settings import KafkaConnection, TopicNames


class ProducerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTSUP_PRODUCER_", env_file=".env", extra="ignore")

    create_topics: bool = True
    """Create the project's topics if missing (idempotent); turn off where clients may not."""
    head_end_id: str = "wattsup-simulator"
    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    topics: TopicNames = Field(default_factory=TopicNames)
