"""The project's clients over TLS, against a real broker with SSL and SASL_SSL listeners.

A throwaway CA (trustme) signs the broker's and the client's certificates in the test. The SSL
listener requires client certificates (mutual TLS); the SASL_SSL listener takes a user name and
password over TLS (SASL PLAIN, and SCRAM-SHA-512 with a user created through the admin API). Every client goes through the one `KafkaConnection` settings
object, as a deployment would set it with `WATTSUP_KAFKA_*`: the readings producer, topic
creation, the history reader, and a real stream worker (Faust/aiokafka via `faust_credentials`).
Wrong CA, missing client certificate and a wrong password are refused.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from deploy.kafka.launcher import free_port
from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.topics import ensure_topics
from readings.history import read_readings
from readings.producer import ReadingProducer
from simulation.fleet import FleetConfig, simulate_fleet

pytestmark = pytest.mark.integration

SASL_USER, SASL_PASSWORD = "wattsup-app", "meters-are-not-labels"
SCRAM_USER, SCRAM_PASSWORD = "wattsup-scram", "salted-and-challenged"
KEY_PASSWORD = "client-key-passphrase"


@dataclass
class TlsFiles:
    ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    client_key_encrypted: Path


def _pkcs8(key_pem: bytes, password: str | None = None) -> bytes:
    """Kafka's PEM key stores read PKCS#8 only; ``password`` encrypts the key."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@dataclass
class TlsBroker:
    node: object
    ssl_port: int
    sasl_ssl_port: int
    files: TlsFiles

    def connection(self, **settings) -> KafkaConnection:
        return KafkaConnection(**settings)

    def mtls(self, **overrides) -> KafkaConnection:
        return KafkaConnection(**{
            "bootstrap_servers": f"127.0.0.1:{self.ssl_port}", "security_protocol": "SSL",
            "ssl_ca_location": self.files.ca, "ssl_certificate_location": self.files.client_cert,
            "ssl_key_location": self.files.client_key, **overrides})

    def sasl(self, **overrides) -> KafkaConnection:
        return KafkaConnection(**{
            "bootstrap_servers": f"127.0.0.1:{self.sasl_ssl_port}", "security_protocol": "SASL_SSL",
            "ssl_ca_location": self.files.ca, "sasl_mechanism": "PLAIN", "sasl_username": SASL_USER,
            "sasl_password": SecretStr(SASL_PASSWORD), **overrides})


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, broker_factory):
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    server = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    client = ca.issue_cert("wattsup-client", key_type=trustme.KeyType.RSA)
    other = trustme.CA(key_type=trustme.KeyType.RSA)

    files = TlsFiles(ca=tmp / "ca.pem", client_cert=tmp / "client.pem", client_key=tmp / "client.key",
                     other_ca=tmp / "other-ca.pem", client_key_encrypted=tmp / "client-encrypted.key")
    ca.cert_pem.write_to_path(str(files.ca))
    other.cert_pem.write_to_path(str(files.other_ca))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    files.client_key.write_bytes(_pkcs8(client.private_key_pem.bytes()))
    files.client_key_encrypted.write_bytes(_pkcs8(client.private_key_pem.bytes(), KEY_PASSWORD))
    keystore = tmp / "broker-keystore.pem"  # PKCS#8 key + certificate chain, one PEM file
    keystore.write_bytes(_pkcs8(server.private_key_pem.bytes()) + b"".join(c.bytes() for c in server.cert_chain_pems))

    ssl_port, sasl_port = free_port(), free_port()
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            f'user_{SASL_USER}="{SASL_PASSWORD}";')
    node = broker_factory(tmp / "kafka", extra_listeners={"SSL": (ssl_port, "SSL"), "SASL_SSL": (sasl_port, "SASL_SSL")},
                          extra_properties={
                              "ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore),
                              "ssl.truststore.type": "PEM", "ssl.truststore.location": str(files.ca),
                              "listener.name.ssl.ssl.client.auth": "required",
                              "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
                              "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
                              "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                                  "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                          })
    yield TlsBroker(node, ssl_port, sasl_port, files)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _refused(connection: KafkaConnection, *expected: str) -> list[str]:
    """What a client reports (errors and librdkafka's log) when it cannot reach the cluster; empty if it can.

    It asks for metadata for up to 6 s, and stops early once the cluster answers (empty) or once an error or
    log line contains one of ``expected``: a refusal is reported well within a second, and waiting out the
    6 s each time made the refusal tests wait for nothing. ``expected`` only ends the wait; the callers
    check what was reported."""
    collect = _Collect()
    logger = logging.getLogger(f"tls-probe-{os.urandom(3).hex()}")
    logger.addHandler(collect)
    logger.propagate = False
    errors: list[str] = []
    admin = AdminClient({**connection.confluent_config(), "error_cb": lambda e: errors.append(str(e)),
                         "logger": logger, "reconnect.backoff.max.ms": 500})
    deadline = time.monotonic() + 6
    while True:
        try:
            admin.list_topics(timeout=min(0.5, max(deadline - time.monotonic(), 0.1)))
            return []
        except KafkaException as exc:
            admin.poll(0.1)  # serve the queued log lines
            reported = [*errors, *collect.lines]
            if time.monotonic() >= deadline or any(e in line for line in reported for e in expected):
                admin.poll(0.5)  # and those that follow at once
                return [*errors, str(exc), *collect.lines]


def _fleet(seed: int):
    return simulate_fleet(FleetConfig(meters=20, days=2, interval=timedelta(hours=1), seed=seed)).readings


def test_mutual_tls_producer_topics_and_history_reader(tls_broker):
    connection = tls_broker.mtls()
    topics = TopicNames(readings="tls.readings", forecasts="tls.forecasts", anomalies="tls.anomalies",
                        dead_letters="tls.dead-letters", control="tls.control", incidents="tls.incidents",
                        feedback="tls.feedback", partitions=2)
    assert set(ensure_topics(connection, topics)) == {topics.readings, topics.forecasts, topics.anomalies,
                                                      topics.dead_letters, topics.control, topics.incidents,
                                                      topics.feedback}
    readings = _fleet(5)
    with ReadingProducer(connection, topics) as producer:
        producer.send_frame(readings, batch_by_feeder=True)
    assert producer.summary.ok and producer.summary.sent == len(readings), producer.summary.line()
    back = read_readings(connection, topics.readings, timeout=30)
    assert len(back) == len(readings)
    assert sorted(back["meter_id"].unique()) == sorted(readings["meter_id"].unique())


def test_wrong_ca_is_refused(tls_broker):
    errors = _refused(tls_broker.mtls(ssl_ca_location=tls_broker.files.other_ca), "certificate verify failed")
    assert any("certificate verify failed" in e for e in errors), errors


def test_client_without_certificate_is_refused_by_mutual_tls(tls_broker):
    errors = _refused(tls_broker.mtls(ssl_certificate_location=None, ssl_key_location=None),
                      "bad certificate", "certificate required")
    assert errors, "the broker requires a client certificate on its SSL listener"
    # Same CA, same listener, with the certificate: accepted (the refusal above was the missing certificate).
    assert _refused(tls_broker.mtls()) == []


def test_sasl_ssl_password_accepted_and_wrong_password_refused(tls_broker):
    connection = tls_broker.sasl()
    topics = TopicNames(readings="sasl.readings", forecasts="sasl.forecasts", anomalies="sasl.anomalies",
                        dead_letters="sasl.dead-letters", control="sasl.control", partitions=2)
    ensure_topics(connection, topics)
    readings = _fleet(6)
    with ReadingProducer(connection, topics) as producer:
        producer.send_frame(readings)
    assert producer.summary.ok and producer.summary.sent == len(readings), producer.summary.line()
    assert len(read_readings(connection, topics.readings, timeout=30)) == len(readings)

    errors = _refused(tls_broker.sasl(sasl_password=SecretStr("not-the-password")), "Authentication failed", "SASL")
    assert any("Authentication failed" in e or "SASL" in e for e in errors), errors


def test_sasl_scram_sha_512_user_created_through_the_admin_api(tls_broker):
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    admin = AdminClient(tls_broker.mtls().confluent_config())
    upsert = UserScramCredentialUpsertion(SCRAM_USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                          SCRAM_PASSWORD.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result()
    connection = tls_broker.sasl(sasl_mechanism="SCRAM-SHA-512", sasl_username=SCRAM_USER,
                                 sasl_password=SecretStr(SCRAM_PASSWORD))
    topics = TopicNames(readings="scram.readings", forecasts="scram.forecasts", anomalies="scram.anomalies",
                        dead_letters="scram.dead-letters", control="scram.control", partitions=1)
    ensure_topics(connection, topics)
    readings = _fleet(8)
    with ReadingProducer(connection, topics) as producer:
        producer.send_frame(readings, batch_by_feeder=True)
    assert producer.summary.ok and producer.summary.sent == len(readings), producer.summary.line()
    errors = _refused(tls_broker.sasl(sasl_mechanism="SCRAM-SHA-512", sasl_username=SCRAM_USER,
                                      sasl_password=SecretStr("guess")), "Authentication failed", "SASL")
    assert any("Authentication failed" in e or "SASL" in e for e in errors), errors


def test_stream_worker_over_mutual_tls(tls_broker, tmp_path, monkeypatch):
    """A real `wattsup stream` (Faust on aiokafka, credentials from faust_credentials) over mutual TLS,
    with a password-protected client key, as is usual in production."""
    from tests.conftest import WorkerFactory

    connection = tls_broker.mtls(ssl_key_location=tls_broker.files.client_key_encrypted,
                                 ssl_key_password=SecretStr(KEY_PASSWORD))
    topics = TopicNames(readings="tlsw.readings", forecasts="tlsw.forecasts", anomalies="tlsw.anomalies",
                        dead_letters="tlsw.dead-letters", control="tlsw.control", partitions=2)
    ensure_topics(connection, topics)
    for key, value in {"SECURITY_PROTOCOL": "SSL", "SSL_CA_LOCATION": tls_broker.files.ca,
                       "SSL_CERTIFICATE_LOCATION": tls_broker.files.client_cert,
                       "SSL_KEY_LOCATION": tls_broker.files.client_key_encrypted,
                       "SSL_KEY_PASSWORD": KEY_PASSWORD}.items():
        monkeypatch.setenv(f"WATTSUP_KAFKA_{key}", str(value))

    @dataclass
    class TlsEndpoint:
        bootstrap_servers: str

    workers = WorkerFactory(TlsEndpoint(connection.bootstrap_servers), tmp_path)
    worker = workers.start(topics, tmp_path / "no-models", app_id=f"tls-{os.urandom(3).hex()}")
    try:
        readings = _fleet(7)
        with ReadingProducer(connection, topics) as producer:
            producer.send_frame(readings, batch_by_feeder=True)
        assert worker.wait_for("wattsup_stream_readings_processed_total", len(readings), timeout=180) == len(readings)
    finally:
        worker.stop()
