"""``wattsup forecast schedule`` on the real broker: repeated runs, metrics, accuracy as forecasts come due, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta

import pandas as pd
import pytest

from deploy.kafka.launcher import free_port
from readings.producer import ReadingProducer
from simulation.fleet import FleetConfig, simulate_fleet

pytestmark = pytest.mark.integration


def metric(port: int, name: str, labels: str = "") -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    pattern = rf"^{name}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    values = re.findall(pattern, text, re.M)
    return float(values[0]) if values else None


def wait_for(process: subprocess.Popen, port: int, name: str, at_least: float, labels: str = "",
             timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        assert process.poll() is None, "schedule exited early"
        value = metric(port, name, labels)
        if value is not None and value >= at_least:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{name}{{{labels}}} reached {value}, wanted {at_least}")


def test_schedule_runs_repeatedly_reports_metrics_and_accuracy_and_stops_on_sigterm(kafka, tmp_path):
    topics = kafka.fresh_topics(partitions=4)
    fleet = simulate_fleet(FleetConfig(meters=10, days=7, interval=timedelta(hours=1), seed=77, anomaly_rate=0))
    readings = fleet.readings
    cut = readings["timestamp"].min() + pd.Timedelta(days=6)
    newcomers = simulate_fleet(FleetConfig(meters=2, days=1, interval=timedelta(hours=1), seed=78)).readings
    newcomers["meter_id"] = "NEW-" + newcomers["meter_id"]
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(readings[readings["timestamp"] <= cut], batch_by_feeder=True)
        producer.send_frame(newcomers, batch_by_feeder=True)

    port = free_port()
    env = {**os.environ, "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()},
           "WATTSUP_FORECAST_DATA_DIR": str(tmp_path / "forecaster"), "WATTSUP_FORECAST_METRICS_PORT": str(port)}
    log_path = tmp_path / "schedule.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "wattsup.cli", "forecast", "schedule", "--every", "4s", "--history", "28d",
         "--horizon", "24h", "--workers", "1"],
        env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(process, port, "wattsup_forecast_runs_total", 1, 'result="ok"')
        assert metric(port, "wattsup_forecast_fits_total", 'outcome="prophet"') >= 10
        assert metric(port, "wattsup_forecast_fits_total", 'outcome="seasonal_naive"') >= 2  # one day of history
        assert metric(port, "wattsup_forecast_last_success_timestamp_seconds") > time.time() - 120
        assert metric(port, "wattsup_forecast_fit_duration_seconds_count") >= 12

        # the next day arrives: the following run scores the previous run's horizon against it
        with ReadingProducer(kafka.connection, topics) as producer:
            producer.send_frame(readings[readings["timestamp"] > cut], batch_by_feeder=True)
        points = wait_for(process, port, "wattsup_forecast_smape_points", 200, timeout=60)
        assert points <= 10 * 24
        assert 0.02 < metric(port, "wattsup_forecast_smape_ratio") < 0.6
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert "forecast schedule stopped" in output
    summaries = re.findall(r"meters=(\d+) prophet=(\d+) fallbacks=(\d+) failures=(\d+)", output)
    assert len(summaries) >= 2 and summaries[0] == ("12", "10", "2", "0"), output[-3000:]


def test_schedule_on_an_empty_readings_topic_runs_and_stops_cleanly(kafka, tmp_path):
    """The demo starts the forecaster before any reading exists."""
    topics = kafka.fresh_topics(partitions=4)
    port = free_port()
    env = {**os.environ, "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()},
           "WATTSUP_FORECAST_DATA_DIR": str(tmp_path / "forecaster"), "WATTSUP_FORECAST_METRICS_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "-m", "wattsup.cli", "forecast", "schedule", "--every", "60s",
                                "--workers", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_for(process, port, "wattsup_forecast_runs_total", 1, 'result="ok"', timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output[-3000:]
    assert "meters=0 prophet=0 fallbacks=0 failures=0" in output
