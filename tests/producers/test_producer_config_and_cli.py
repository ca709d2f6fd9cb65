"""Producer settings, safety settings that cannot be overridden, and failure accounting without a broker."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from producers.cli import parse_interval
from producers.kafka_producer import DeliverySummary, ReadingProducer, producer_config
from producers.settings import ProducerSettings
from producers.simulator import FleetConfig, simulate_fleet
from wattsup.kafka_settings import KafkaConnection, TopicNames


def _closed_port() -> int:
    """A local port nobody listens on: sends there can only fail."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_idempotence_acks_and_partitioner_cannot_be_overridden():
    config = producer_config(KafkaConnection(bootstrap_servers="h:1"), **{
        "acks": "1", "enable.idempotence": False, "partitioner": "consistent_random", "linger.ms": 5})
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert config["partitioner"] == "murmur2_random"
    assert config["linger.ms"] == 5 and config["compression.type"] == "lz4"


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("WATTSUP_PRODUCER_LINGER_MS", "50")
    monkeypatch.setenv("WATTSUP_PRODUCER_COMPRESSION_TYPE", "zstd")
    monkeypatch.setenv("WATTSUP_PRODUCER_MAX_READINGS_PER_BATCH", "100")
    monkeypatch.setenv("WATTSUP_KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9093")
    monkeypatch.setenv("WATTSUP_TOPIC_READINGS", "r")
    settings = ProducerSettings()
    assert settings.kafka.bootstrap_servers == "kafka-1:9093" and settings.topics.readings == "r"
    assert settings.librdkafka_overrides()["linger.ms"] == 50
    assert settings.librdkafka_overrides()["compression.type"] == "zstd"
    assert settings.max_readings_per_batch == 100


@pytest.mark.parametrize("text, seconds", [("5m", 300), ("15m", 900), ("1h", 3600), ("1d", 86400), ("30s", 30),
                                           ("15min", 900)])
def test_intervals_parse(text, seconds):
    assert parse_interval(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["15", "m", "0m", "1.5s", "15 minutes"])
def test_bad_intervals_are_refused(text):
    import typer

    with pytest.raises(typer.BadParameter):
        parse_interval(text)


def test_undelivered_readings_count_as_failed_in_readings_not_records():
    topics = TopicNames(readings="r", dead_letters="d")
    frame = simulate_fleet(FleetConfig(meters=20, days=0.25, meters_per_feeder=10)).readings
    producer = ReadingProducer(KafkaConnection(bootstrap_servers=f"127.0.0.1:{_closed_port()}"), topics,
                               flush_timeout=0.5)
    producer.send_frame(frame, batch_by_feeder=True)
    producer.send_dead_letter("csv:x.csv", "negative kwh -1", raw_text="t,m,-1", row_number=2)
    summary = producer.close()
    assert summary.sent == 0 and summary.failed == len(frame)
    assert summary.rejected == 1 and summary.dead_letters_failed == 1
    assert not summary.ok
    assert summary.line().startswith(f"sent=0 failed={len(frame)} rejected=1 ")


def test_summary_line_and_rate():
    summary = DeliverySummary(sent=1000, started=0.0, finished=2.0)
    assert summary.readings_per_second == 500
    assert summary.line() == "sent=1000 failed=0 rejected=0 records=0 seconds=2.00 rate=500 readings/s"
    assert summary.ok


def test_cli_exits_non_zero_when_readings_are_not_delivered(tmp_path, monkeypatch):
    from wattsup.cli import app

    monkeypatch.setenv("WATTSUP_PRODUCER_CREATE_TOPICS", "false")
    monkeypatch.setenv("WATTSUP_PRODUCER_FLUSH_TIMEOUT_S", "0.5")
    path = tmp_path / "r.csv"
    path.write_text("timestamp,meter_id,kwh\n2026-01-01T00:00:00Z,M1,1\n2026-01-01T00:15:00Z,M1,2\n")
    result = CliRunner().invoke(app, ["produce", "csv", str(path), "--as-fast-as-possible",
                                      "--bootstrap-servers", f"127.0.0.1:{_closed_port()}"])
    assert result.exit_code == 1, result.output
    assert "sent=0 failed=2 rejected=0" in result.output


def test_cli_refuses_unusable_input_with_exit_code_2(tmp_path):
    from wattsup.cli import app

    path = tmp_path / "r.csv"
    path.write_text("time,value\n1,2\n")
    result = CliRunner().invoke(app, ["produce", "csv", str(path), "--as-fast-as-possible"])
    assert result.exit_code == 2
    assert "unrecognised columns" in result.output


def test_cli_refuses_speedup_with_as_fast_as_possible():
    from wattsup.cli import app

    result = CliRunner().invoke(app, ["produce", "simulate", "--speedup", "10", "--as-fast-as-possible"])
    assert result.exit_code != 0
    assert "not both" in result.output
