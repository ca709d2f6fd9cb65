"""Connection and topic settings every WattsUp service shares, read from the environment.

Each service has its own settings object (``producers.settings``, ``stream_processors.settings``,
...) that *contains* these, so pointing WattsUp at a real cluster means setting the same few
``WATTSUP_KAFKA_*`` variables for every service: bootstrap servers and, for a secured cluster,
the security protocol with TLS files and SASL credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class KafkaConnection(BaseSettings):
    """How to reach Kafka (``WATTSUP_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="WATTSUP_KAFKA_", env_file=".env", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = Field(None, description="PEM file of the CA that signed the brokers' certificates.")
    ssl_certificate_location: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    ssl_key_location: Path | None = Field(None, description="Client private key (PEM) for mutual TLS.")
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry; unset means Avro single-object encoding."
    )
    schema_registry_basic_auth: SecretStr | None = Field(None, description="user:password for the registry.")
    replication_factor: int = 1
    min_insync_replicas: int = 1

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, value in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if value:
                conf[key] = str(value)
        if self.ssl_key_password:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL") and not self.ssl_check_hostname:
            conf["ssl.endpoint.identification.algorithm"] = "none"
        return conf

    def registry_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {}
        if self.schema_registry_basic_auth:
            conf["basic.auth.user.info"] = self.schema_registry_basic_auth.get_secret_value()
        return conf


class TopicNames(BaseSettings):
    """Topic names and partition counts (``WATTSUP_TOPIC_*``).

    readings, forecasts and control share one partition count so the stream worker's tables are
    co-partitioned with them.
    """

    model_config = SettingsConfigDict(env_prefix="WATTSUP_TOPIC_", env_file=".env", extra="ignore")

    readings: str = "wattsup.readings"
    forecasts: str = "wattsup.forecasts"
    anomalies: str = "wattsup.anomalies"
    dead_letters: str = "wattsup.dead-letters"
    control: str = "wattsup.control"
    incidents: str = "wattsup.incidents"
    feedback: str = "wattsup.feedback"
    partitions: int = 8
    retention_ms: int = 7 * 24 * 3600 * 1000
