"""Settings of the stream worker (``WATTSUP_STREAM_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from foundation.fleet_clock import FleetClock
from foundation.kafka_settings import PROJECT_ROOT, KafkaConnection, TopicNames
from models.settings import ModelSettings


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTSUP_STREAM_", env_file=".env", extra="ignore")

    app_id: str = "wattsup-stream"
    """Consumer group and prefix of the changelog topics; workers with the same id share partitions."""
    max_batch_messages: int = 2000
    """Messages taken at a time (Faust's ``take_events``): single-reading messages want thousands per
    batch, since Faust's and the engine's costs per batch are paid however few readings it holds."""
    max_batch_bytes: int = 1_000_000
    """Message payload scored as one micro-batch at most: a take of head-end messages (hundreds of
    readings each) is scored in chunks of this size, whole messages each (stream_processors.batching)."""
    batch_within_seconds: float = 0.2
    """Longest wait to fill a micro-batch: bounds the latency a reading adds before scoring."""
    model_poll_seconds: float = 10.0
    """How often the worker looks for a newer detector version to hot-reload."""
    data_dir: Path = PROJECT_ROOT / "var" / "stream"
    metrics_port: int = 9101
    web_port: int = 6066
    worker_host: str = "127.0.0.1"
    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    topics: TopicNames = Field(default_factory=TopicNames)
    fleet: FleetClock = Field(default_factory=FleetClock)
    """The fleet's time zone and holidays (``WATTSUP_FLEET_*``), shared with training and the forecaster."""
    models: ModelSettings = Field(default_factory=ModelSettings)
    """Where detector versions are (``WATTSUP_MODEL_DIR``, shared with training and the dashboard)."""
