"""Every Grafana panel's query returns data from a real Prometheus scraping a running pipeline.

Real broker, a real ``wattsup stream`` worker, the real ``wattsup lag-exporter``, and Debian's
Prometheus scraping both every second while simulated readings flow. Each panel target is then
run as Grafana would run it (instant query, Grafana's variables substituted) and must return at
least one series with a number. Panels whose service is not running in this test, or whose
metric the worker does not export yet, are skipped with the reason, so the skip list is what
is left to check.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta

import pytest

from deploy.grafana.dashboard_model import DASHBOARDS_DIR, PanelQuery, load_dashboard, panel_queries
from deploy.kafka.launcher import free_port
from deploy.prometheus.local_server import LocalPrometheus
from producers.kafka_producer import ReadingProducer
from producers.simulator import FleetConfig, simulate_fleet

pytestmark = pytest.mark.integration

DASHBOARD = load_dashboard(DASHBOARDS_DIR / "wattsup-overview.json")
QUERIES = panel_queries(DASHBOARD, rate_interval="2m", interval="1s", range_="5m")
SERVICES_NOT_STARTED = {
    "wattsup_forecast_": "the forecaster",
    "wattsup_dashboard_": "the dashboard service",
}


def _metrics_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


@pytest.fixture(scope="module")
def scraped_pipeline(kafka, tmp_path_factory):
    """Worker + lag exporter + Prometheus, with readings produced while Prometheus scrapes."""
    from tests.conftest import WorkerFactory

    tmp = tmp_path_factory.mktemp("panels")
    topics = kafka.fresh_topics(partitions=4)
    app_id = f"panels-{os.urandom(3).hex()}"
    workers = WorkerFactory(kafka, tmp)
    worker = workers.start(topics, tmp / "no-models", app_id=app_id)  # no model: baseline rules score

    lag_port = free_port()
    env = {**os.environ, "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "WATTSUP_TOPIC_READINGS": topics.readings, "WATTSUP_TOPIC_DEAD_LETTERS": topics.dead_letters,
           "WATTSUP_TOPIC_ANOMALIES": topics.anomalies, "WATTSUP_TOPIC_FORECASTS": topics.forecasts,
           "WATTSUP_TOPIC_CONTROL": topics.control, "WATTSUP_LAG_EXPORTER_PORT": str(lag_port),
           "WATTSUP_LAG_EXPORTER_GROUPS": f'["{app_id}"]'}
    lag_log = tmp / "lag-exporter.log"
    exporter = subprocess.Popen([sys.executable, "-m", "wattsup.cli", "lag-exporter"], env=env,
                                stdout=open(lag_log, "wb"), stderr=subprocess.STDOUT)
    prometheus = LocalPrometheus(tmp / "prometheus", {
        "wattsup-stream": [f"127.0.0.1:{worker.metrics_port}"],
        "wattsup-lag-exporter": [f"127.0.0.1:{lag_port}"],
    })
    try:
        prometheus.start()
        # Prometheus must see the counters before and after readings arrive, or every rate() is 0.
        try:
            _wait_for_scrapes(prometheus, targets=2, scrapes=3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlag exporter (exit {exporter.poll()}): {lag_log.read_text()[-3000:]}"
                                 f"\nworker: {worker.log_path.read_text()[-2000:]}") from exc
        fleet = simulate_fleet(FleetConfig(meters=100, days=4, interval=timedelta(hours=1), seed=66,
                                           anomaly_rate=0.5, meters_per_feeder=10))
        readings = fleet.readings.sort_values("timestamp", kind="stable")
        chunks = 4
        with ReadingProducer(kafka.connection, topics) as producer:
            for i in range(chunks):
                chunk = readings.iloc[i * len(readings) // chunks:(i + 1) * len(readings) // chunks]
                producer.send_frame(chunk, batch_by_feeder=True)
                if i == chunks - 1:
                    producer.producer.produce(topics.readings, key=b"F-broken", value=b"not an avro record")
                producer.flush(30)
                worker.wait_for("wattsup_stream_readings_processed_total", 0.9 * (i + 1) * len(readings) / chunks,
                                timeout=120)
                time.sleep(2.5)  # at least two scrapes between chunks
        worker.wait_for("wattsup_stream_dead_letters_total", 1, timeout=60)
        # A few scrapes of the final state of both targets.
        _wait_for_scrapes(prometheus, targets=2, scrapes=prometheus.scrapes_done() + 3)
        yield prometheus, worker
    finally:
        prometheus.stop()
        exporter.terminate()
        exporter.wait(15)
        for started in workers.started:
            started.stop()


def _wait_for_scrapes(prometheus: LocalPrometheus, targets: int, scrapes: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = prometheus.active_targets()
        if len(active) == targets and all(t["health"] == "up" for t in active) and prometheus.scrapes_done() >= scrapes:
            return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus did not scrape {targets} targets {scrapes} times: {prometheus.active_targets()}")


def _skip_reason(query: PanelQuery, exported: set[str]) -> str | None:
    for prefix, service in SERVICES_NOT_STARTED.items():
        if prefix in query.expr:
            return f"panel {query.panel_title!r} needs {service}, not started by this test"
    for name in re.findall(r"\b(wattsup_stream_[a-z_]+)", query.expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base not in exported:
            return f"panel {query.panel_title!r}: the stream worker does not export {base} yet"
    return None


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.panel_id}{q.ref_id}-{q.panel_title}")
def test_panel_query_returns_data(scraped_pipeline, query):
    prometheus, worker = scraped_pipeline
    exported = set(re.findall(r"^# TYPE (\S+) ", _metrics_text(worker.metrics_port), re.M))
    reason = _skip_reason(query, exported)
    if reason:
        pytest.skip(reason)
    result = prometheus.query(query.expr)
    assert result, f"panel {query.panel_title!r} target {query.ref_id}: no series for {query.expr}"
    values = [float(series["value"][1]) for series in result]
    raw = [name for name in re.findall(r"\b(wattsup_[a-z_]+)", query.expr)]
    assert any(math.isfinite(v) for v in values), (
        f"{query.expr}: only {values}; raw samples: {[prometheus.query(n + '[2m]') for n in raw]}")
