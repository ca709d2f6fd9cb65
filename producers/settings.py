"""Settings of the producers (``WATTSUP_PRODUCER_*``).

Connection and topic names are the shared ``WATTSUP_KAFKA_*`` / ``WATTSUP_TOPIC_*`` settings, so
pointing every service at one cluster takes the same few variables; only the producer's own
tunables live here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from foundation.kafka_settings import KafkaConnection, TopicNames
from readings.producer import ReadingProducer


class ProducerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTSUP_PRODUCER_", env_file=".env", extra="ignore")

    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    topics: TopicNames = Field(default_factory=TopicNames)

    create_topics: bool = True
    """Create the project's topics if missing (idempotent); turn off where clients may not."""
    head_end_id: str = "wattsup-simulator"
    """``head_end_id`` of the head-end batches the simulator sends."""
    max_readings_per_batch: int = Field(5000, gt=0)
    """Head-end batches are split past this many readings to stay under Kafka's message size."""

    # Batching: large, compressed requests are what make a million readings a few seconds' work.
    linger_ms: int = Field(20, ge=0)
    """How long librdkafka waits to fill a request; a little latency buys much larger batches."""
    batch_size: int = Field(1_000_000, gt=0)
    """Upper bound of one partition's request, in bytes."""
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    """lz4: cheap on CPU, and the stream worker's aiokafka decodes it (aiokafka[lz4] brings cramjam)."""
    queue_buffering_max_messages: int = Field(500_000, gt=0)
    queue_buffering_max_kbytes: int = Field(256 * 1024, gt=0)
    flush_timeout_s: float = Field(60.0, gt=0)
    """How long closing waits for outstanding deliveries; the rest count as failed."""
    message_timeout_ms: int = Field(0, ge=0)
    """How long librdkafka keeps trying to deliver a reading; 0, the default, is for as long as the producer
    runs: a broker outage is waited out (the local queue fills, then sending blocks) instead of turning
    into failed readings. Only what is still unacknowledged ``flush_timeout_s`` after the end counts as failed."""

    def reading_producer(self, **kwargs: Any) -> ReadingProducer:
        """The readings producer these settings describe."""
        return ReadingProducer(self.kafka, self.topics, config_overrides=self.librdkafka_overrides(),
                               max_readings_per_batch=self.max_readings_per_batch,
                               flush_timeout=self.flush_timeout_s, client_name="produce-command", **kwargs)

    def librdkafka_overrides(self) -> dict[str, Any]:
        """The tunables as librdkafka settings (applied over the producer defaults)."""
        return {
            "linger.ms": self.linger_ms,
            "batch.size": self.batch_size,
            "compression.type": self.compression_type,
            "queue.buffering.max.messages": self.queue_buffering_max_messages,
            "queue.buffering.max.kbytes": self.queue_buffering_max_kbytes,
            "message.timeout.ms": self.message_timeout_ms,
        }
