"""The producers' settings and command line: settings from the environment, failures with exit codes."""

from __future__ import annotations

from typer.testing import CliRunner

from producers.settings import ProducerSettings
from readings.producer import ReadingProducer
from tests.waiting import closed_port


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
    assert isinstance(settings.reading_producer(), ReadingProducer)


def test_cli_exits_non_zero_when_readings_are_not_delivered(tmp_path, monkeypatch):
    from wattsup.cli import app

    monkeypatch.setenv("WATTSUP_PRODUCER_CREATE_TOPICS", "false")
    monkeypatch.setenv("WATTSUP_PRODUCER_FLUSH_TIMEOUT_S", "0.5")
    path = tmp_path / "r.csv"
    path.write_text("timestamp,meter_id,kwh\n2026-01-01T00:00:00Z,M1,1\n2026-01-01T00:15:00Z,M1,2\n")
    result = CliRunner().invoke(app, ["produce", "csv", str(path), "--as-fast-as-possible",
                                      "--bootstrap-servers", f"127.0.0.1:{closed_port()}"])
    assert result.exit_code == 1, result.output
    assert "sent=0 failed=2 rejected=0" in result.output


def test_cli_refuses_unusable_input_with_exit_code_2(tmp_path):
    from wattsup.cli import app

    path = tmp_path / "r.csv"
    path.write_text("time,value\n1,2\n")
    result = CliRunner().invoke(app, ["produce", "csv", str(path), "--as-fast-as-possible"])
    assert result.exit_code == 2
    # the console wraps the message at 80 columns, where depends on the length of the temp path
    assert "unrecognised columns" in " ".join(result.output.split())


def test_cli_refuses_speedup_with_as_fast_as_possible():
    from wattsup.cli import app

    result = CliRunner().invoke(app, ["produce", "simulate", "--speedup", "10", "--as-fast-as-possible"])
    assert result.exit_code != 0
    assert "not both" in result.output
